"""Exporters of tinyquant models to the files other tools run (GGUF for llama.cpp)."""
