"""`rmm-billing push`: the issued invoices of a month into a PSA or a signed webhook."""
