"""Recipe helpers: the results ledger (``scripts/ledger.py``) and the paper's figures it compares with."""
