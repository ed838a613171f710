"""Export: a run as one GGUF file for llama.cpp, Ollama and LM Studio (gguf_writer: the weights, streamed a tensor
at a time; gguf_vocab: the tokenizer and chat template), an Ollama Modelfile (ollama), the file read back and checked
against the run before it ships (read_back), and the command's whole flow (export_run)."""
