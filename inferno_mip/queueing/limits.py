"""Resource limits of the perf models. Inputs beyond them describe no real server and would need more memory or
time than a host has (the chain has a state per batch slot), so they are refused up front with the limit named."""

MAX_BATCH = 8192  # max batch size N (vLLM's max_num_seqs is at most a few thousand in practice)
MAX_QUEUE = 10_000_000  # max queue size Q (states beyond N are a closed-form tail, so Q may be large)
MAX_TOKENS = 10_000_000  # mean input or output tokens per request
MAX_PARAM = 1e12  # perf parameters alpha, beta, gamma, delta (ms per iteration or per token)
