from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestEnvelope(_message.Message):
    __slots__ = ("protocol_version", "device_session_id", "message_type", "request_id", "timestamp_ms", "payload_hash", "trace_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_HASH_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    device_session_id: str
    message_type: str
    request_id: str
    timestamp_ms: int
    payload_hash: bytes
    trace_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., device_session_id: _Optional[str] = ..., message_type: _Optional[str] = ..., request_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., payload_hash: _Optional[bytes] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ExecuteCommandRequest(_message.Message):
    __slots__ = ("envelope", "payload_bytes", "signature")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    envelope: RequestEnvelope
    payload_bytes: bytes
    signature: bytes
    def __init__(self, envelope: _Optional[_Union[RequestEnvelope, _Mapping]] = ..., payload_bytes: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SubscribeEventsRequest(_message.Message):
    __slots__ = ("envelope", "payload_bytes", "signature")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    envelope: RequestEnvelope
    payload_bytes: bytes
    signature: bytes
    def __init__(self, envelope: _Optional[_Union[RequestEnvelope, _Mapping]] = ..., payload_bytes: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ResponseEnvelope(_message.Message):
    __slots__ = ("protocol_version", "request_id", "timestamp_ms", "result_code", "payload_hash", "trace_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    RESULT_CODE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_HASH_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    request_id: str
    timestamp_ms: int
    result_code: str
    payload_hash: bytes
    trace_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., request_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., result_code: _Optional[str] = ..., payload_hash: _Optional[bytes] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ExecuteCommandResponse(_message.Message):
    __slots__ = ("envelope", "payload_bytes", "signature")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    envelope: ResponseEnvelope
    payload_bytes: bytes
    signature: bytes
    def __init__(self, envelope: _Optional[_Union[ResponseEnvelope, _Mapping]] = ..., payload_bytes: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class EventEnvelope(_message.Message):
    __slots__ = ("protocol_version", "event_id", "event_type", "timestamp_ms", "payload_hash", "trace_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_HASH_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    event_id: str
    event_type: str
    timestamp_ms: int
    payload_hash: bytes
    trace_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., payload_hash: _Optional[bytes] = ..., trace_id: _Optional[str] = ...) -> None: ...

class GatewayEvent(_message.Message):
    __slots__ = ("envelope", "payload_bytes", "signature")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    envelope: EventEnvelope
    payload_bytes: bytes
    signature: bytes
    def __init__(self, envelope: _Optional[_Union[EventEnvelope, _Mapping]] = ..., payload_bytes: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
