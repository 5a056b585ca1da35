"""Reports a person reads: one self-contained HTML page per run or export bundle (``html``) and its
figures (``figures``)."""
