"""A record held in the stack frame of the function that asks for it.

``np.empty(1, dtype)[0]`` puts a record on the heap, where LLVM must assume the input
arrays may alias it and keeps every field in memory, loaded and stored at every bar. A
record from :func:`local_record` lives in the frame (an ``alloca``): once the bar step is
inlined into the loop, LLVM's scalar replacement keeps its fields in registers, as a
hand-written loop keeps its locals. It must not outlive the function that created it.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def local_record(typingctx, dtype):
    """A zeroed record of numpy ``dtype`` (a record dtype known at compile time) in the
    caller's stack frame."""
    if not isinstance(dtype, types.DType) or not isinstance(dtype.dtype, types.Record):
        return None
    record = dtype.dtype

    def codegen(context, builder, signature, args):
        pointer_type = context.data_model_manager[record].get_value_type()
        layout = _field_layout(context, record) or pointer_type.pointee
        pointer = cgutils.alloca_once(builder, layout, name="local_record")
        # a memset, not a store of a zero aggregate: scalar replacement splits such a
        # store, and every field it overlaps, into single bytes
        size = context.get_abi_sizeof(layout)
        cgutils.memset(builder, pointer, ir.Constant(ir.IntType(64), size), 0)
        return builder.bitcast(pointer, pointer_type)

    return record(dtype), codegen


def _field_layout(context, record):
    """An LLVM struct with the record's fields at their offsets, or None.

    numba's record is a ``[size x i8]`` array: in a frame of that type, LLVM's scalar
    replacement gives an integer field the type of the array's slice, eight bytes, and the
    bar step then rebuilds a counter from eight registers at every increment. With the
    fields typed, each one becomes one register of its own type.
    """
    members = []
    offset = 0
    for name, field_type in sorted(record.members, key=lambda m: record.offset(m[0])):
        start = record.offset(name)
        if start < offset:
            return None
        if start > offset:
            members.append(ir.ArrayType(ir.IntType(8), start - offset))
        llvm_type = context.get_data_type(field_type)
        members.append(llvm_type)
        offset = start + context.get_abi_sizeof(llvm_type)
    if offset > record.size:
        return None
    if offset < record.size:
        members.append(ir.ArrayType(ir.IntType(8), record.size - offset))
    layout = ir.LiteralStructType(members, packed=True)
    return layout if context.get_abi_sizeof(layout) == record.size else None
