"""Meta's Marketing API for customer-list Custom Audiences: the client, its pacer, errors, the audience
manager and uploader (sessions done right), and the upload ledger."""
