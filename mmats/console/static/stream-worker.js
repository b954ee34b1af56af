// One live stream for every open tab of the console (a SharedWorker): a browser opens at
// most six HTTP/1.1 connections to one server, and a server-sent-events stream holds one
// for good, so a stream per tab would starve the seventh tab's requests. Each tab talks
// to this worker through its port; the worker relays every journaled row to all of them.
"use strict";

const ports = new Set();
let source = null;

function open(after) {
  source = new EventSource(`/api/stream?after=${after}`);
  source.addEventListener("hello", (event) => send({ type: "hello", data: event.data }));
  source.addEventListener("changes", (event) => send({ type: "changes", data: event.data }));
  source.onerror = () => send({ type: "error" });
}

function send(message) {
  for (const port of ports) port.postMessage(message);
}

onconnect = (event) => {
  const port = event.ports[0];
  ports.add(port);
  port.onmessage = (message) => {
    if (message.data.type === "start" && source === null) open(message.data.after);
    if (message.data.type === "start" && source !== null && source.readyState === 1) {
      port.postMessage({ type: "hello", data: "{}" });
    }
    if (message.data.type === "bye") ports.delete(port);
  };
  port.start();
};
