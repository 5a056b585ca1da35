"""Text: the second modality through the same stages (readers, tokenizers, word vectors, encoders).

Modules: :mod:`.data` (CSV / folders of ``.txt`` / Python lists into a DataBundle of texts),
:mod:`.tokenize` (the regex tokenizer MediaPipe's TextClassifier also runs), :mod:`.vectors`
(pretrained word-vector files) and :mod:`.encoders` (the word model, TF-Hub BERT pairs, Hugging
Face BERT-family checkpoints and sentence encoders, built as one flat model that takes raw
strings); for ``hf:`` checkpoints :mod:`.hf` (reading and checking the files, a NumPy forward
pass), :mod:`.hf_encoder` (the tf_keras encoder) and :mod:`.wordpiece` (MediaPipe's BERT
tokenizer rule for training).
"""
