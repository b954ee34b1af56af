"""The frame records of :mod:`mmats.nb.local` are laid out field by field.

A record the bar step keeps in its frame must be an LLVM struct of its fields' own types
at numpy's offsets: LLVM then keeps each field in one register. Typed as numba's
``[size x i8]`` (what ``_field_layout`` falls back to), LLVM splits the integer fields into
bytes and rebuilds them at every bar. The values are the same either way; this checks the
layout the speed relies on, and that a record read back from the frame is the one written.
"""

import numpy as np
import pytest
from numba import from_dtype, njit
from numba.core.registry import cpu_target

from mmats.nb.local import _field_layout, local_record
from mmats.types import FILL_DTYPE, METRICS_DTYPE, ORDER_DTYPE, STATE_DTYPE, TRADE_DTYPE

DTYPES = {"state": STATE_DTYPE, "metrics": METRICS_DTYPE, "fill": FILL_DTYPE,
          "order": ORDER_DTYPE, "trade": TRADE_DTYPE}


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_frame_records_are_typed_structs_of_the_dtype_size(name):
    context = cpu_target.target_context
    record = from_dtype(DTYPES[name])
    layout = _field_layout(context, record)
    assert layout is not None
    assert context.get_abi_sizeof(layout) == DTYPES[name].itemsize
    # one member per field (and padding arrays), each field at numpy's offset
    types = [str(member) for member in layout.elements]
    assert types.count("double") + types.count("i64") >= len(record.members) // 2


@njit
def _round_trip(cash, bars):
    state = local_record(STATE_DTYPE)
    state.cash = cash
    for _ in range(bars):
        state.bars += 1
    out = np.empty(1, STATE_DTYPE)
    out[0].cash = state.cash
    out[0].bars = state.bars
    out[0].position = state.position  # zeroed by local_record
    return out


def test_a_frame_record_starts_zeroed_and_keeps_what_is_written():
    out = _round_trip(123.5, 1_000_003)[0]
    assert (out["cash"], out["bars"], out["position"]) == (123.5, 1_000_003, 0.0)
