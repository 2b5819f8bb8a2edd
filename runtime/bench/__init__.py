"""`fleetserve bench`: a serving benchmark client for any OpenAI-compatible server.

Torch-free on purpose (it runs on client machines): workloads are built with the model's tokenizer
(transformers' AutoTokenizer, tokenizers only), requests are streamed over HTTP with httpx.

Modules, one concept each:
  tokenizer.py  loading the tokenizer and the token ids random prompts are drawn from
  prompts.py    prompts with an exact token count (optionally behind a shared prefix)
  workloads.py  random, shared-prefix and file workloads; LoRA adapter mixes
  client.py     one streaming request -> RequestResult with its timings
  runner.py     warm-up, request rate (Poisson) and concurrency control, progress bar
  metrics.py    pure aggregation: percentiles, latencies, throughput, failures
  report.py     the summary table and the JSON result
  main.py       the command line
"""
