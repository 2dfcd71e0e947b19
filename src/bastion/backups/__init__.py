"""Encrypted backups: online snapshots, age encryption to offline identities,
signed manifests, verify, restore, drills, destinations, schedule and retention.

- ``manifest``: the manifest, ``manifest.sig`` and the ``.manifest`` sidecar
  (``read_sidecar``, ``verify_sidecar``, ``file_digest``);
- ``archive``: the tar.zst.age file written and read as streams
  (``write_archive``, ``extract``, ``list_backups``, ``BackupInfo``);
- ``snapshot``: the online copy of the database (``take_snapshot``) and
  ``table_digests`` / ``database_digests``, what a restore is checked against;
- ``create``: ``create_backup`` and ``trusted_vkeys`` (the live keystore's
  notary verifier keys);
- ``verify``: ``verify_backup`` (integrity_check or a scratch pg_restore,
  ``compare_tables``);
- ``destinations``: ``LocalDestination``, ``S3Destination``,
  ``destination_for``, ``destinations_of``;
- ``ledger_sync``: the erasure ledger beside the backups (``sync_ledger``,
  the hook erasure calls);
- ``errors``: ``BackupInvalid`` (exit 1), ``BackupUnavailable`` (exit 2).
"""
