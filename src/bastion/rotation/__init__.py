"""Credential rotation on a schedule: signing, encryption and notary keys,
reminders before API keys and OAuth client secrets expire, and reloads of
certificates and ``*_FILE`` secrets. Every rotation, reload and reminder is an
audit event.

The job is ``bastion.rotation.job.RotationJob`` (a ``LeasedLoop`` "rotation"
in ``serve``); ``key_statuses`` is what `bastion keys status` shows.
"""

from bastion.rotation.schedule import AUTOMATIC, GROUPS, KeyStatus, key_statuses

__all__ = ["AUTOMATIC", "GROUPS", "KeyStatus", "key_statuses"]
