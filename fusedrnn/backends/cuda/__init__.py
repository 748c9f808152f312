"""Backend ``cuda`` (issue 5): persistent fused CUDA kernels compiled at run time with NVRTC.

What is here so far is the compilation layer (``nvrtc``): CUDA C++ source -> cubin through NVIDIA's
cuda-core package, an on-disk cache safe for concurrent processes, and ptxas' resource report. The kernels and
the backend's registration come with issue 5; until then nothing in this package is registered or dispatched
to.
"""
