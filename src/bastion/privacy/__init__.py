"""What Bastion holds about a person, handed back (GDPR art. 15, 20) or erased
(art. 17, crypto-shredding and the erasure ledger), and how long data is kept."""
