"""CUDA graphs and stream capture: graphs built by API (kernel, memset,
memcpy and empty nodes with dependencies) and by capturing a stream,
instantiated, launched, updated (kernel node parameters, whole-graph update)
and destroyed."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from driver_helpers import Kernels, ParamArray, err_of, ok, read_ints, write_ints

N = 64


@pytest.fixture
def stream(cu: ModuleType, ctx: Any) -> Iterator[Any]:
    s = ok(cu.cuStreamCreate(cu.CUstream_flags.CU_STREAM_NON_BLOCKING))
    yield s
    ok(cu.cuStreamSynchronize(s))
    ok(cu.cuStreamDestroy(s))


class Graphs:
    """Graphs and executable graphs of one test, destroyed at the end."""

    def __init__(self, cu: ModuleType) -> None:
        self.cu = cu
        self.graphs: list[Any] = []
        self.execs: list[Any] = []
        self.keep: list[Any] = []  # kernel argument arrays, alive while used

    def create(self) -> Any:
        g = ok(self.cu.cuGraphCreate(0))
        self.graphs.append(g)
        return g

    def instantiate(self, g: Any) -> Any:
        e = ok(self.cu.cuGraphInstantiate(g, 0))
        self.execs.append(e)
        return e

    def kernel_params(self, kernels: Kernels, name: str, *args: Any) -> Any:
        p = self.cu.CUDA_KERNEL_NODE_PARAMS()
        p.func = kernels.fn(name)
        p.gridDimX = p.gridDimY = p.gridDimZ = 1
        p.blockDimX, p.blockDimY, p.blockDimZ = N, 1, 1
        p.sharedMemBytes = 0
        arr = ParamArray(args)
        self.keep.append(arr)
        p.kernelParams = arr.address
        return p

    def close(self) -> None:
        for e in self.execs:
            ok(self.cu.cuGraphExecDestroy(e))
        for g in self.graphs:
            ok(self.cu.cuGraphDestroy(g))


@pytest.fixture
def graphs(cu: ModuleType, ctx: Any) -> Iterator[Graphs]:
    g = Graphs(cu)
    yield g
    ok(cu.cuCtxSynchronize())
    g.close()


def memset_params(cu: ModuleType, dst: int, value: int, count: int) -> Any:
    m = cu.CUDA_MEMSET_NODE_PARAMS()
    m.dst = dst
    m.value = value
    m.elementSize = 4
    m.width = count
    m.height = 1
    m.pitch = 0
    return m


def copy_params(cu: ModuleType, dst: int, src: int, nbytes: int) -> Any:
    c = cu.CUDA_MEMCPY3D()
    c.srcMemoryType = cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
    c.srcDevice = src
    c.dstMemoryType = cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
    c.dstDevice = dst
    c.WidthInBytes = nbytes
    c.Height = 1
    c.Depth = 1
    return c


def test_graph_built_by_api(
    cu: ModuleType,
    graphs: Graphs,
    kernels: Kernels,
    dmem: Callable[[int], int],
    stream: Any,
) -> None:
    a, b, c = dmem(4 * N), dmem(4 * N), dmem(4 * N)
    g = graphs.create()
    fill = ok(cu.cuGraphAddMemsetNode(g, None, 0, memset_params(cu, a, 41, N), ctx_of(cu)))
    inc = graphs.kernel_params(
        kernels, "add_one", ctypes.c_uint64(a), ctypes.c_uint64(b), ctypes.c_int(N)
    )
    add = ok(cu.cuGraphAddKernelNode(g, [fill], 1, inc))
    join = ok(cu.cuGraphAddEmptyNode(g, [add], 1))
    ok(cu.cuGraphAddMemcpyNode(g, [join], 1, copy_params(cu, c, b, 4 * N), ctx_of(cu)))
    assert ok(cu.cuGraphGetNodes(g, 0))[1] == 4
    kind = cu.CUgraphNodeType
    assert ok(cu.cuGraphNodeGetType(add)) == kind.CU_GRAPH_NODE_TYPE_KERNEL
    assert ok(cu.cuGraphNodeGetType(fill)) == kind.CU_GRAPH_NODE_TYPE_MEMSET
    assert ok(cu.cuGraphNodeGetType(join)) == kind.CU_GRAPH_NODE_TYPE_EMPTY
    e = graphs.instantiate(g)
    ok(cu.cuGraphLaunch(e, stream))
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, c, N) == [42] * N
    # Launched again after the host changed its input's source: the memset
    # runs again, so the result is the same. The host's copy may still be in
    # flight when cuMemcpyHtoD returns (pageable memory), and the graph's
    # stream does not wait for the legacy stream (NON_BLOCKING): without the
    # synchronize the zeros can land after the memset (seen through the
    # interposer on an H200).
    write_ints(cu, a, [0] * N)
    ok(cu.cuCtxSynchronize())
    ok(cu.cuGraphLaunch(e, stream))
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, c, N) == [42] * N


def ctx_of(cu: ModuleType) -> Any:
    return ok(cu.cuCtxGetCurrent())


def test_kernel_node_parameters_of_an_executable_graph(
    cu: ModuleType, graphs: Graphs, kernels: Kernels, dmem: Callable[[int], int], stream: Any
) -> None:
    p = dmem(4)
    g = graphs.create()
    params = graphs.kernel_params(kernels, "write_value", ctypes.c_uint64(p), ctypes.c_int(7))
    node = ok(cu.cuGraphAddKernelNode(g, None, 0, params))
    e = graphs.instantiate(g)
    # The graph's node changes after instantiation: the executable keeps its copy.
    ok(
        cu.cuGraphKernelNodeSetParams(
            node, graphs.kernel_params(kernels, "write_value", ctypes.c_uint64(p), ctypes.c_int(8))
        )
    )
    ok(cu.cuGraphLaunch(e, stream))
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, p, 1) == [7]
    new = graphs.kernel_params(kernels, "write_value", ctypes.c_uint64(p), ctypes.c_int(9))
    ok(cu.cuGraphExecKernelNodeSetParams(e, node, new))
    ok(cu.cuGraphLaunch(e, stream))
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, p, 1) == [9]
    # Another function takes the node's place (CUDA 12; NVIDIA's driver 580).
    ok(cu.cuGraphExecKernelNodeSetParams(e, node, graphs.kernel_params(kernels, "noop")))
    ok(cu.cuGraphLaunch(e, stream))
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, p, 1) == [9]


def test_stream_capture(
    cu: ModuleType, graphs: Graphs, kernels: Kernels, dmem: Callable[[int], int], stream: Any
) -> None:
    a, b = dmem(4 * N), dmem(4 * N)
    write_ints(cu, b, [-1] * N)
    ok(cu.cuCtxSynchronize())  # landed before the NON_BLOCKING stream's work (see above)
    status = cu.CUstreamCaptureStatus
    assert ok(cu.cuStreamIsCapturing(stream)) == status.CU_STREAM_CAPTURE_STATUS_NONE
    ok(cu.cuStreamBeginCapture(stream, cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_GLOBAL))
    assert ok(cu.cuStreamIsCapturing(stream)) == status.CU_STREAM_CAPTURE_STATUS_ACTIVE
    info = cu.cuStreamGetCaptureInfo(stream)
    assert info[0] == cu.CUresult.CUDA_SUCCESS
    assert info[1] == status.CU_STREAM_CAPTURE_STATUS_ACTIVE and int(info[2]) != 0
    ok(cu.cuMemsetD32Async(a, 5, N, stream))
    args = (ctypes.c_uint64(a), ctypes.c_uint64(b), ctypes.c_int(N))
    assert kernels.launch("add_one", *args, block=(N, 1, 1), stream=stream) == (
        cu.CUresult.CUDA_SUCCESS
    )
    ok(cu.cuMemcpyDtoDAsync(a, b, 4 * N, stream))
    g = ok(cu.cuStreamEndCapture(stream))
    graphs.graphs.append(g)
    assert ok(cu.cuStreamIsCapturing(stream)) == status.CU_STREAM_CAPTURE_STATUS_NONE
    # Captured work is recorded, not run.
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, b, N) == [-1] * N
    nodes, count = ok(cu.cuGraphGetNodes(g, 3))
    assert count == 3
    kind = cu.CUgraphNodeType
    assert [ok(cu.cuGraphNodeGetType(n)) for n in nodes] == [
        kind.CU_GRAPH_NODE_TYPE_MEMSET,
        kind.CU_GRAPH_NODE_TYPE_KERNEL,
        kind.CU_GRAPH_NODE_TYPE_MEMCPY,
    ]
    e = graphs.instantiate(g)
    for _ in range(2):
        ok(cu.cuGraphLaunch(e, stream))
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, b, N) == [6] * N and read_ints(cu, a, N) == [6] * N


def test_exec_update(
    cu: ModuleType, graphs: Graphs, kernels: Kernels, dmem: Callable[[int], int], stream: Any
) -> None:
    p = dmem(4)

    def writer(value: int, extra_node: bool = False) -> Any:
        g = graphs.create()
        args = (ctypes.c_uint64(p), ctypes.c_int(value))
        params = graphs.kernel_params(kernels, "write_value", *args)
        node = ok(cu.cuGraphAddKernelNode(g, None, 0, params))
        if extra_node:
            ok(cu.cuGraphAddEmptyNode(g, [node], 1))
        return g

    e = graphs.instantiate(writer(1))
    info = ok(cu.cuGraphExecUpdate(e, writer(2)))
    assert info.result == cu.CUgraphExecUpdateResult.CU_GRAPH_EXEC_UPDATE_SUCCESS
    ok(cu.cuGraphLaunch(e, stream))
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, p, 1) == [2]
    # Another topology: refused (cuda-bindings hands back no result info then).
    err = err_of(cu.cuGraphExecUpdate(e, writer(3, extra_node=True)))
    assert err == cu.CUresult.CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE
    ok(cu.cuGraphLaunch(e, stream))  # unchanged
    ok(cu.cuStreamSynchronize(stream))
    assert read_ints(cu, p, 1) == [2]


def test_capture_errors(cu: ModuleType, graphs: Graphs, stream: Any) -> None:
    mode = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_GLOBAL
    # The legacy NULL stream cannot be captured.
    assert err_of(cu.cuStreamBeginCapture(0, mode)) == (
        cu.CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    )
    # Ending a capture that never began.
    assert err_of(cu.cuStreamEndCapture(stream)) == cu.CUresult.CUDA_ERROR_ILLEGAL_STATE
    ok(cu.cuStreamBeginCapture(stream, mode))
    assert err_of(cu.cuStreamBeginCapture(stream, mode)) == cu.CUresult.CUDA_ERROR_ILLEGAL_STATE
    g = ok(cu.cuStreamEndCapture(stream))
    graphs.graphs.append(g)
    assert ok(cu.cuGraphGetNodes(g, 0))[1] == 0


def test_destroyed_handles(cu: ModuleType, ctx: Any) -> None:
    g = ok(cu.cuGraphCreate(0))
    e = ok(cu.cuGraphInstantiate(g, 0))
    ok(cu.cuGraphDestroy(g))
    ok(cu.cuGraphExecDestroy(e))
    inval = cu.CUresult.CUDA_ERROR_INVALID_VALUE
    assert err_of(cu.cuGraphDestroy(g)) == inval
    assert err_of(cu.cuGraphExecDestroy(e)) == inval
