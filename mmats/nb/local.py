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
        pointer = cgutils.alloca_once(builder, pointer_type.pointee, name="local_record")
        builder.store(ir.Constant(pointer_type.pointee, None), pointer)
        return pointer

    return record(dtype), codegen
