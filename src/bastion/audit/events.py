"""Typed audit event tags: every security event Bastion records has one."""

from __future__ import annotations

from enum import StrEnum


class EventTag(StrEnum):
    REGISTER = "auth:register"
    REGISTER_EXISTING = "auth:register:existing"
    EMAIL_VERIFY = "auth:email:verify"
    LOGIN = "auth:login"
    LOGIN_MFA_REQUIRED = "auth:login:mfa_required"
    MFA = "auth:mfa"
    REFRESH = "auth:refresh"
    REFRESH_REUSE = "auth:refresh:reuse_detected"
    LOGOUT = "auth:logout"
    LOCKOUT = "auth:lockout"
    UNLOCK = "auth:unlock"
    PASSWORD_FORGOT = "auth:password:forgot"
    PASSWORD_RESET = "auth:password:reset"
    PASSWORD_CHANGE = "auth:password:change"
    TOTP_ENROL = "auth:totp:enrol"
    TOTP_ENABLE = "auth:totp:enable"
    TOTP_DISABLE = "auth:totp:disable"
    SESSION_REVOKE = "auth:session:revoke"
    API_KEY_CREATE = "auth:api_key:create"
    API_KEY_REVOKE = "auth:api_key:revoke"
    ACCESS_DENIED = "access:denied"
    USER_CREATE = "admin:user:create"
    USER_ROLE = "admin:user:role"
    USER_LOCK = "admin:user:lock"
    ROLE_CHANGE = "admin:role:change"
    RECORD_CREATE = "data:record:create"
    RECORD_UPDATE = "data:record:update"
    RECORD_DELETE = "data:record:delete"
    RECORD_DENIED = "data:record:denied"
    RECORD_TAMPERED = "data:record:tampered"
    COLLECTIONS_CHANGE = "admin:collections:change"
    KEY_ROTATE = "admin:keys:rotate"
    KEY_REMOVE = "admin:keys:remove"
    KEY_REVOKE = "admin:keys:revoke"
    KEYS_REWRAP = "admin:keys:rewrap"
    OAUTH_CLIENT_CREATE = "oauth:client:create"
    OAUTH_CLIENT_SECRET_ROTATE = "oauth:client:secret_rotate"
    OAUTH_CLIENT_DELETE = "oauth:client:delete"
    # Who is reminded before its secret expires (details: client_id, owner_id or null).
    OAUTH_CLIENT_OWNER = "oauth:client:owner"
    # A client refused at the token-style endpoints; recorded only for a right secret
    # past its expiry (details: {"reason": "secret_expired"}), which its owner must fix.
    OAUTH_CLIENT_AUTH = "oauth:client:auth"
    # Sign-in with other providers (Bastion as an OAuth client).
    OAUTH_PROVIDER_SIGN_IN = "oauth:provider:sign_in"
    OAUTH_IDENTITY_LINK = "oauth:identity:link"
    OAUTH_IDENTITY_UNLINK = "oauth:identity:unlink"
    OAUTH_CONSENT = "oauth:consent"
    OAUTH_CONSENT_REVOKE = "oauth:consent:revoke"
    OAUTH_LOGOUT = "oauth:logout"
    OAUTH_DEVICE_DECISION = "oauth:device:decision"
    # No "code:" or "token:" inside a tag: the log redactor would hide what follows as a secret.
    OAUTH_TOKEN = "oauth:token"
    OAUTH_CODE_REUSE = "oauth:code_reuse_detected"
    OAUTH_REFRESH_REUSE = "oauth:refresh_reuse_detected"
    OAUTH_DPOP_REPLAY = "oauth:dpop_replay"
    OAUTH_GRANT_REVOKE = "oauth:grant_revoke"
    OAUTH_TOKEN_REVOKE = "oauth:token_revoke"
    OAUTH_DEVICE_AUTHORIZE = "oauth:device_authorize"
    OAUTH_PUSHED_REQUEST = "oauth:par"
    # Sign-in hardening set by detection rules (bastion.monitor).
    STEP_UP_REQUIRED = "auth:step_up:required"
    PASSWORD_RESET_REQUIRED = "auth:password:reset_required"
    NEW_DEVICE = "auth:login:new_device"
    # The audit log itself, monitoring and the incident toolkit.
    AUDIT_VERIFY = "audit:verify"
    AUDIT_EXPORT = "audit:export"
    # A checkpoint sink (file, webhook, syslog) refused a checkpoint; the stored one stands.
    AUDIT_SINK_FAILED = "audit:sink_failed"
    # Rows left out of the tree: dated more than the tolerance behind the log (inserted, or a clock far off).
    AUDIT_BACKDATED = "audit:backdated"
    ALERT_RAISED = "monitor:alert"
    ALERT_ACK = "monitor:alert:ack"
    BLOCK_ADD = "monitor:block:add"
    BLOCK_REMOVE = "monitor:block:remove"
    LOCKDOWN_ON = "incident:lockdown:on"
    LOCKDOWN_OFF = "incident:lockdown:off"
    REVOKE_ALL = "incident:revoke_all"
    INCIDENT_EXPORT = "incident:export"
    # Backups (bastion.backups): each run, scheduled or not, success or failure.
    BACKUP_CREATE = "backup:create"
    BACKUP_VERIFY = "backup:verify"
    BACKUP_RESTORE = "backup:restore"
    BACKUP_DRILL = "backup:drill"
    BACKUP_PRUNE = "backup:prune"
    # Privacy (bastion.privacy): a user's data handed back or erased, retention purges.
    PRIVACY_EXPORT = "privacy:export"
    PRIVACY_ERASE = "privacy:erase"
    PRIVACY_PURGE = "privacy:purge"
    # Rotation (bastion.rotation): scheduled key rotations are KEY_ROTATE with details
    # {"scheduled": true}; reminders before a credential expires, reloads of files.
    ROTATION_REMIND = "rotation:remind"
    ROTATION_RELOAD = "rotation:reload"
    # Events of routes added through the extension API; details say what happened.
    EXTENSION = "extension"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"
