"""The live runner: one tick per invocation (cron), a loop, controls, and replay.

examples:
  mmats live --config configs/advisory_crypto.yaml --once --json   # one tick
  mmats live --config FILE --loop                               # without cron
  mmats live --config FILE --serve                              # always on: streams, /health
  mmats live --config FILE kill --reason "..."                  # flatten, halt
  mmats live --config FILE pause MODEL | resume [MODEL] | close SYMBOL | status
  mmats live --config FILE order --model M --symbol S --side buy --quantity Q  # or --exposure X
  mmats live --config FILE --replay --data bittrex:ETH/BTC:5m --json   # paper replay
  mmats live --config FILE --mode operator --once               # real orders

A tick reads the bars that closed since the last tick from the candle store (data_root),
runs every model on the shared kernel, journals everything and exits. Operator mode first
looks up every order whose outcome is unknown and reconciles positions with each venue,
then sends the decisions; against a real venue it needs `environment: prod` and
--i-understand-live-trading (`execution: paper` rehearses it on the paper venue). kill,
pause, close and status only reduce risk or read: they never need the flag. An order goes
through the runner's risk gates (mmats.live.manual): refused, it says which limit forbids
it. Replay runs the runner one tick per bar of stored history, each tick loading its state
from the journal as a cron run would; for a one-model configuration it equals `mmats
backtest` (--mode operator replays the operator path against the paper venue instead).

exit codes: 0 done; 1 a tick's fail-safe acted (an alert: cron mails the output), or an
order was refused (the reason is printed); 2 usage or input error (a bad option, a missing
or bad configuration, operator mode on a real venue without the flag, data that cannot be
read).
"""

import contextlib
import sys
import tempfile
from pathlib import Path

from mmats.cli import (
    EXIT_NO,
    add_data_option,
    add_json_option,
    command_parser,
    fail,
    print_json,
)
from mmats.errors import ConfigError, MMATSError


def main(argv=None, prog="mmats live") -> int:
    parser = command_parser(prog, __doc__)
    parser.add_argument("command", nargs="*",
                        help="kill | pause MODEL | resume [MODEL] | close SYMBOL | status "
                        "| order (default: a tick)")
    parser.add_argument("--config", required=True, help="runner configuration (YAML)")
    parser.add_argument("--mode", choices=["advisory", "paper", "operator"],
                        help="override the configuration's mode")
    parser.add_argument("--once", action="store_true", help="one tick, then exit (default)")
    parser.add_argument("--loop", action="store_true",
                        help="tick after every bar close until interrupted")
    serve = parser.add_argument_group(
        "serve (always on: a tick at each bar close from the venues' streams, /health on "
        "loopback, systemd's watchdog, a graceful stop on SIGTERM)")
    serve.add_argument("--serve", action="store_true", help="run until stopped")
    serve.add_argument("--health-port", type=int, default=8787,
                       help="port of GET /health on --health-host (8787; 0: any free port)")
    serve.add_argument("--health-host", default="127.0.0.1",
                       help="loopback address of /health (127.0.0.1)")
    serve.add_argument("--no-health", action="store_true", help="serve no /health")
    serve.add_argument("--clock", metavar="START[@SPEED[@ORIGIN]]",
                       help="a rehearsal clock: time starts at START (ISO or ns) and runs "
                       "SPEED times faster (e.g. 2021-03-01@60 on stored data); ORIGIN, "
                       "the wall time START was (default: now), lets processes share it")
    parser.add_argument("--i-understand-live-trading", action="store_true",
                        help="required with --mode operator against a real venue")
    parser.add_argument("--reason", default="", help="why (journaled with a control)")
    order = parser.add_argument_group("order (an operator's order for one model's symbol)")
    order.add_argument("--model")
    order.add_argument("--symbol")
    order.add_argument("--side", choices=["buy", "sell"])
    order.add_argument("--quantity", type=float, help="units to buy or sell")
    order.add_argument("--exposure", type=float, help="target exposure, a fraction of the "
                       "sleeve's equity (the side gives its sign)")
    parser.add_argument("--replay", nargs="?", const="", metavar="DATA",
                        help="replay stored history: with --data (or DATA here) for a "
                        "one-symbol configuration; without, each configured symbol from the "
                        "configuration's data_root")
    add_data_option(parser, default=None, what="with --replay: the candles to replay, a "
                    "file or VENUE:SYMBOL:TIMEFRAME")
    parser.add_argument("--cash", type=float, default=10_000.0,
                        help="starting cash of each market's paper account (10000)")
    parser.add_argument("--journal", help="journal for the replay (default: a new temporary "
                        "file, so a replay never mixes with the live journal)")
    parser.add_argument("--bars", type=int, help="replay only the first N bars")
    add_json_option(parser)
    parser.add_argument("--now", help="the tick's (or order's) clock (ISO time, or ns since "
                        "the epoch) instead of the wall clock: for rehearsals against a "
                        "test venue")
    args = parser.parse_args(argv)
    if args.data is not None:
        if args.replay is None:
            parser.error("--data goes with --replay (a tick reads the configuration's "
                         "data_root)")
        if args.replay and args.replay != args.data:
            parser.error(f"two replay sources: --replay {args.replay} and --data {args.data}")
        args.replay = args.data
    args.stdout = sys.stdout  # with --json, only the JSON object goes here
    if args.replay is None:
        try:
            if not args.json:
                return run_live(args)
            with contextlib.redirect_stdout(sys.stderr):  # the console notifier's lines
                return run_live(args)
        except MMATSError as error:
            return fail(error)
    try:
        from mmats.data import load
        from mmats.live.config import load_config
        from mmats.live.replay import replay

        config = load_config(args.config)
        candles = {}
        for market in config.markets:
            for symbol in market.symbols:
                if args.replay:
                    if sum(len(m.symbols) for m in config.markets) != 1:
                        raise ConfigError("--replay DATA serves one symbol; this configuration "
                                          "trades several: give --replay alone")
                    frame = load(args.replay, root=args.root)
                else:
                    frame = load(f"{market.feed}:{symbol}:{market.timeframe}",
                                 root=config.data_root)
                candles[symbol] = frame.iloc[: args.bars] if args.bars else frame
        journal = Path(args.journal) if args.journal else Path(
            tempfile.mkdtemp(prefix="mmats-replay-")) / "journal.sqlite"
        result = replay(config, candles, journal, cash=args.cash,
                        mode="operator" if args.mode == "operator" else "paper")
    except MMATSError as error:
        return fail(error)
    fills = [{"sleeve": f"{row['model_id']}:{row['symbol']}", "ts": row["ts"].isoformat(),
              "side": int(row["side"]), "qty": float(row["qty"]), "price": float(row["price"]),
              "fee": float(row["fee"])}
             for row in _fills_frame(result.journal).to_dict(orient="records")]
    if args.json:
        print_json({"final_equity": result.final_equity, "fills": fills,
                    "trades": result.trades, "journal": str(result.journal)})
        return 0
    for fill in fills:
        side = "BUY " if fill["side"] > 0 else "SELL"
        print(f"{fill['ts']}  {fill['sleeve']:28s} {side} {fill['qty']:.8g} @ "
              f"{fill['price']:.8g}  fee {fill['fee']:.4g}")
    print(f"\nfinal equity {result.final_equity:,.2f}, {result.trades} closed trades; "
          f"journal {result.journal}")
    return 0


def run_live(args) -> int:
    from mmats.live import control
    from mmats.live.config import check_can_trade, load_config

    config = load_config(args.config)
    command = args.command
    mode = args.mode or config.mode
    # kill, status, pause and close only reduce risk: never refused for want of the flag;
    # a tick and a resume (trading again) on a real venue need it
    if mode == "operator" and (not command or command[0] == "resume"):
        check_can_trade(config, args.i_understand_live_trading, mode)
    if command:
        verb, rest = command[0], command[1:]
        if verb == "status":
            print_json(control.status(config), file=args.stdout)  # JSON with or without --json
            return 0
        if verb == "kill":
            if rest:
                raise ConfigError("kill takes no argument (it halts everything); give the "
                                  "reason with --reason")
            outcome = control.kill(config, reason=args.reason, mode=mode, cash=args.cash,
                                   live_trading_allowed=args.i_understand_live_trading)
            _say(args, {"command": "kill", "sleeves": outcome.sleeves,
                        "acted_at_venues": outcome.acted_at_venues,
                        "deferred": outcome.deferred, "problems": outcome.problems},
                 str(outcome))
            return 0
        if verb in ("pause", "resume"):
            if verb == "pause" and len(rest) != 1:
                raise ConfigError("pause takes one MODEL id")
            model = rest[0] if rest else None
            action = control.pause if verb == "pause" else control.resume_models
            changed = action(config, model, reason=args.reason)
            _say(args, {"command": verb, "sleeves": changed},
                 f"{verb}d {', '.join(changed) or 'no sleeve yet'}")
            return 0
        if verb == "order":
            return _order(args, config, mode, rest)
        if verb == "close":
            if len(rest) != 1:
                raise ConfigError("close takes one SYMBOL")
            changed = control.close_symbol(config, rest[0], reason=args.reason)
            _say(args, {"command": "close", "sleeves": changed},
                 f"closing {', '.join(changed) or 'no sleeve yet'} at the next bar's open")
            return 0
        raise ConfigError(f"unknown command {verb!r}; use kill, pause, resume, close, order "
                          "or status")
    if args.serve:
        if args.loop or args.once:
            raise ConfigError("--serve runs until stopped: give it without --once or --loop")
        return _serve(args, config, mode)
    if not args.loop:
        report = control.tick_once(config, mode=mode, cash=args.cash, now_ns=_now(args.now),
                                   live_trading_allowed=args.i_understand_live_trading)
        _say(args, {"command": "tick", "bars": report.bars, "signals": report.signals,
                    "orders": report.orders, "fills": report.fills, "rejects": report.rejects,
                    "alerts": [{"title": title, "message": message}
                               for title, message in report.alerts]},
             f"{report.bars} new bar(s), {len(report.signals)} signal(s), "
             f"{report.orders} order(s) sent, {report.fills} fill(s), "
             f"{report.rejects} refused")
        return EXIT_NO if report.alerts else 0  # a fail-safe acted: cron mails the output
    control.run_loop(config, mode=mode, cash=args.cash,
                     live_trading_allowed=args.i_understand_live_trading)
    return 0


def _serve(args, config, mode) -> int:
    """``--serve``: the always-on runner (:mod:`mmats.live.service`)."""
    from mmats.live.service import RehearsalClock, Service

    clock = None
    if args.clock is not None:
        start, _, rest = args.clock.partition("@")
        speed, _, origin = rest.partition("@")
        try:
            speed = float(speed) if speed else 1.0
        except ValueError:
            raise ConfigError(f"--clock {args.clock!r}: SPEED must be a number, e.g. "
                              "2021-03-01@60") from None
        clock = RehearsalClock(_now(start, "--clock"), speed,
                               _now(origin, "--clock") if origin else None)
    service = Service(config, mode=mode, cash=args.cash,
                      live_trading_allowed=args.i_understand_live_trading,
                      health_host=args.health_host,
                      health_port=None if args.no_health else args.health_port, clock=clock)
    if service.health_server is not None:
        print(f"serving {args.config}: /health on http://{service.health_server.host}:"
              f"{service.health_server.port}/health", flush=True)
    return service.run()


def _order(args, config, mode, rest) -> int:
    """``order``: through the risk gates (:func:`mmats.live.manual.manual_order`); exit 1,
    with the reason, when refused."""
    from mmats.live.kill import os_user
    from mmats.live.manual import manual_order

    if rest or not (args.model and args.symbol and args.side):
        raise ConfigError("order takes --model, --symbol, --side and one of --quantity and "
                          "--exposure, and no other argument")
    outcome = manual_order(config, args.model, args.symbol, side=args.side,
                           quantity=args.quantity, exposure=args.exposure, user=os_user(),
                           reason=args.reason, mode=mode, cash=args.cash,
                           live_trading_allowed=args.i_understand_live_trading,
                           now_ns=_now(args.now))
    _say(args, outcome.to_dict(), outcome.message)
    return 0 if outcome.accepted else EXIT_NO


def _say(args, value: dict, text: str) -> None:
    """One JSON object with --json, else the line a person (or cron's mail) reads."""
    if args.json:
        print_json(value, file=args.stdout)
    else:
        print(text)


def _now(text, option="--now"):
    """``--now`` as nanoseconds since the epoch: an ISO time (naive = UTC) or an integer
    count of nanoseconds, between 1970 and 2262 (what int64 nanoseconds hold)."""
    if text is None:
        return None
    import pandas as pd

    now_ns = None
    try:
        if text.strip().lstrip("+-").isdigit():
            now_ns = int(text)
        else:
            stamp = pd.Timestamp(text)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            now_ns = stamp.as_unit("ns").value
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        pass  # out of range: said below
    except ValueError:
        raise ConfigError(f"{option} {text!r} is neither an ISO time nor nanoseconds") from None
    if now_ns is None or not 0 <= now_ns < 2**63:
        raise ConfigError(f"{option} {text!r} is out of range: give a time between 1970 and "
                          f"{pd.Timestamp.max:%Y-%m-%d}, as ISO or nanoseconds since the epoch")
    return now_ns


def _fills_frame(path):
    from mmats.live.journal import Journal

    with Journal(path, create=False, readonly=True) as journal:
        frame = journal.fills_frame()
    if "ts" not in frame.columns:
        import pandas as pd

        frame["ts"] = pd.to_datetime(frame["fill_ts_ns"] if "fill_ts_ns" in frame else
                                     frame["ts_ns"], utc=True)
    return frame

