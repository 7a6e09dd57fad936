"""The client SDK: what a device uses to log in, send signed commands and verify signed events.

``edgeward.client`` is the one import path for client authors; ``edgeward.client.sdk`` holds the
code and ``edgeward.client.cli`` the ``keygen``, ``pubkey``, ``call`` and ``subscribe`` commands.
The device key is a ``Signer`` (``load_signer`` reads a key file written by ``edgeward keygen``).
"""

from edgeward.client.sdk import (
    CHANNEL_OPTIONS,
    REPLAYED_METADATA_KEY,
    SUBSCRIBE_MESSAGE_TYPE,
    AuthError,
    CommandResult,
    EdgewardClient,
    Event,
    GatewayError,
    VerificationError,
    build_signed_request,
    confirm_email_code,
    error_from_rpc,
    error_from_status,
    login_with_stub_mailbox,
    new_request_id,
    read_stub_mailbox,
    send_email_code,
    verify_event,
    verify_response,
)
from edgeward.native.crypto import Signer
from edgeward.native.keys import KeyFileError, load_signer, save_signer

__all__ = (
    "CHANNEL_OPTIONS",
    "REPLAYED_METADATA_KEY",
    "SUBSCRIBE_MESSAGE_TYPE",
    "AuthError",
    "CommandResult",
    "EdgewardClient",
    "Event",
    "GatewayError",
    "KeyFileError",
    "Signer",
    "VerificationError",
    "build_signed_request",
    "confirm_email_code",
    "error_from_rpc",
    "error_from_status",
    "load_signer",
    "login_with_stub_mailbox",
    "new_request_id",
    "read_stub_mailbox",
    "save_signer",
    "send_email_code",
    "verify_event",
    "verify_response",
)
