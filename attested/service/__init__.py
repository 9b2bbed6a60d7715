"""The enclave secrets service (``attested serve``) and its parent companion."""
