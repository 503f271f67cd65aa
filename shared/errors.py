"""Errors troupe raises. One base, one subclass per condition.

Errors that a caller caused carry an HTTP status (4xx) so the gateway can answer with it.
"""


class TroupeError(Exception):
    """Base of every troupe error."""

    status = 500
    code = "InternalError"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        body = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(TroupeError):
    """Input from outside is malformed: names the field and the problem."""

    status = 400
    code = "BadRequest"


class Unauthorized(TroupeError):
    status = 401
    code = "Unauthorized"


class Forbidden(TroupeError):
    status = 403
    code = "Forbidden"


class NotFound(TroupeError):
    status = 404
    code = "NotFound"


class MethodNotAllowed(TroupeError):
    status = 405
    code = "MethodNotAllowed"


class Conflict(TroupeError):
    status = 409
    code = "Conflict"


class PayloadTooLarge(TroupeError):
    status = 413
    code = "PayloadTooLarge"


class ServiceUnavailable(TroupeError):
    status = 503
    code = "ServiceUnavailable"


# --- storage -------------------------------------------------------------------------------


class StoreError(TroupeError):
    """A storage call failed."""

    code = "StoreError"


class InvalidKey(StoreError, BadRequest):
    """An object key is not acceptable (traversal, control characters, too long...)."""

    status = 400
    code = "InvalidKey"


class NoSuchKey(StoreError, NotFound):
    status = 404
    code = "NoSuchKey"


class ObjectExists(StoreError, Conflict):
    """A create-only put found the key taken (OSS: 409 FileAlreadyExists)."""

    status = 409
    code = "FileAlreadyExists"


class TransientStoreError(StoreError):
    """A storage call failed in a way worth retrying (5xx, timeout, connection reset)."""

    status = 503
    code = "TransientStoreError"


class UnsafeBucket(StoreError):
    """The bucket has versioning on: create-only writes would silently overwrite."""

    code = "UnsafeBucket"


# --- conversations -------------------------------------------------------------------------


class RejectedEvent(TroupeError):
    """A trigger event that must not be processed (bad key, foreign prefix...). Logged, not retried."""

    status = 400
    code = "RejectedEvent"


class ConversationEnded(TroupeError):
    status = 409
    code = "ConversationEnded"
