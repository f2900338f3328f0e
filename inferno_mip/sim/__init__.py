"""Fleet simulator, request by request: the yardstick the perf models are judged by.

It never imports ``inferno_mip.queueing`` or ``inferno_mip.tables``.
"""
