// edgeward-web.js: a minimal browser client of the edgeward gateway over gRPC-Web.
//
// No dependency and no build step: the contract's few protobuf messages are encoded and decoded by
// hand (../../proto/edgeward/v1/gateway.proto), the signing inputs are built exactly as the wire
// contract's section 2 says, SHA-256 and Ed25519 come from WebCrypto, and the gRPC-Web framing (binary
// `application/grpc-web+proto` or base64 `application/grpc-web-text+proto`) is read from a fetch()
// body stream. Nothing the gateway sends is handed to the caller before it is verified: the payload
// hash (constant-time compare), the gateway's Ed25519 signature over the canonical signing input, and
// for a command the echo of the request id; the first event of a stream must be the
// `gateway.server_time` of this very subscription.

export const PROTOCOL_VERSION = 1;
export const SUBSCRIBE_MESSAGE_TYPE = "gateway.subscribe";
export const SERVICE = "edgeward.v1.EdgeGateway";
export const MODES = Object.freeze(["binary", "text"]);

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

// --- errors ----------------------------------------------------------------------------------------

/** The gateway (or the transport) ended a call with a gRPC status other than OK. */
export class GatewayError extends Error {
  constructor(status) {
    super(`${status.codeName}: ${status.reason}`);
    this.name = "GatewayError";
    Object.assign(this, status);
  }
}

/** An answer that must not be trusted: bad payload hash, bad signature, wrong request id. */
export class VerificationError extends Error {
  constructor(message) {
    super(message);
    this.name = "VerificationError";
  }
}

/** Bytes that are not a valid protobuf message or gRPC-Web stream. */
export class DecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = "DecodeError";
  }
}

/** The public auth API answered with an error (`{"error": {"code", "message"}}`) or an odd body. */
export class AuthError extends Error {
  constructor(status, code, message) {
    super(`HTTP ${status} ${code}: ${message}`);
    this.name = "AuthError";
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

// --- bytes -----------------------------------------------------------------------------------------

export function concatBytes(...parts) {
  let size = 0;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  if (text.length % 2 !== 0 || /[^0-9a-fA-F]/.test(text)) throw new DecodeError("not hex");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Standard base64 with padding. */
export function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** Standard (or URL-safe) base64, padding optional (gRPC's `-bin` metadata may come unpadded). */
export function fromBase64(text) {
  let clean = text.replace(/[\s]/g, "").replace(/-/g, "+").replace(/_/g, "/");
  clean = clean.replace(/=+$/, "");
  if (clean.length % 4 === 1) throw new DecodeError("not base64");
  clean += "=".repeat((4 - (clean.length % 4)) % 4);
  let binary;
  try {
    binary = atob(clean);
  } catch {
    throw new DecodeError("not base64");
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Equal length and content, in time that does not depend on where they differ. */
export function digestEquals(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// --- protobuf (proto3: the field types the contract uses) ------------------------------------------
//
// A schema maps field numbers to [name, type]; a type is "uint32", "int32", "int64", "string",
// "bytes", or {message: schema, repeated?: true}. Encoding omits scalar fields holding their default
// (as every proto3 encoder does), so it matches other encoders byte for byte; an embedded message is
// written when it is set. int64 values are BigInts when decoded and may be Numbers or BigInts when
// encoded. Decoding skips unknown fields, as protobuf requires, and fails on anything malformed.

const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

function wireTypeOf(type) {
  return type === "uint32" || type === "int32" || type === "int64" ? VARINT : LENGTH_DELIMITED;
}

function defaultOf(type) {
  switch (type) {
    case "uint32":
    case "int32":
      return 0;
    case "int64":
      return 0n;
    case "string":
      return "";
    case "bytes":
      return new Uint8Array(0);
    default:
      return type.repeated ? [] : undefined;
  }
}

function varintBytes(value) {
  let n = BigInt.asUintN(64, BigInt(value));
  const out = [];
  while (n >= 0x80n) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
  return Uint8Array.from(out);
}

export function encodeMessage(value, schema) {
  const parts = [];
  const numbers = Object.keys(schema).map(Number).sort((a, b) => a - b);
  for (const number of numbers) {
    const [name, type] = schema[number];
    const field = value[name];
    if (field === undefined || field === null) continue;
    const tag = varintBytes((number << 3) | wireTypeOf(type));
    if (type === "uint32" || type === "int32" || type === "int64") {
      if (BigInt(field) === 0n) continue;
      parts.push(tag, varintBytes(type === "uint32" ? BigInt.asUintN(32, BigInt(field)) : field));
    } else if (type === "string" || type === "bytes") {
      const bytes = type === "string" ? utf8.encode(field) : field;
      if (bytes.length === 0) continue;
      parts.push(tag, varintBytes(bytes.length), bytes);
    } else {
      for (const item of type.repeated ? field : [field]) {
        const bytes = encodeMessage(item, type.message);
        parts.push(tag, varintBytes(bytes.length), bytes);
      }
    }
  }
  return concatBytes(...parts);
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  varint() {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.bytes.length) throw new DecodeError("truncated varint");
      const byte = this.bytes[this.pos++];
      result |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return BigInt.asUintN(64, result);
    }
    throw new DecodeError("varint longer than 10 bytes");
  }

  take(length) {
    if (length > this.bytes.length - this.pos) throw new DecodeError("truncated field");
    const out = this.bytes.subarray(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  lengthDelimited() {
    const length = this.varint();
    if (length > BigInt(this.bytes.length - this.pos)) throw new DecodeError("truncated field");
    return this.take(Number(length));
  }

  skip(wireType) {
    if (wireType === VARINT) this.varint();
    else if (wireType === FIXED64) this.take(8);
    else if (wireType === LENGTH_DELIMITED) this.lengthDelimited();
    else if (wireType === FIXED32) this.take(4);
    else throw new DecodeError(`unsupported wire type ${wireType}`);
  }
}

function decodeInto(target, bytes, schema) {
  const reader = new Reader(bytes);
  while (reader.pos < bytes.length) {
    const key = reader.varint();
    const number = Number(key >> 3n);
    const wireType = Number(key & 7n);
    if (number === 0) throw new DecodeError("field number 0");
    const known = schema[number];
    if (known === undefined) {
      reader.skip(wireType);
      continue;
    }
    const [name, type] = known;
    if (wireType !== wireTypeOf(type)) throw new DecodeError(`field ${name} has wire type ${wireType}`);
    switch (type) {
      case "uint32":
        target[name] = Number(BigInt.asUintN(32, reader.varint()));
        break;
      case "int32":
        target[name] = Number(BigInt.asIntN(32, reader.varint()));
        break;
      case "int64":
        target[name] = BigInt.asIntN(64, reader.varint());
        break;
      case "string":
        try {
          target[name] = strictUtf8.decode(reader.lengthDelimited());
        } catch (err) {
          if (err instanceof DecodeError) throw err;
          throw new DecodeError(`field ${name} is not UTF-8`);
        }
        break;
      case "bytes":
        target[name] = reader.lengthDelimited().slice();
        break;
      default: {
        const inner = reader.lengthDelimited();
        if (type.repeated) {
          target[name].push(decodeInto(blank(type.message), inner, type.message));
        } else {
          // A message field seen twice is merged, as protobuf does.
          target[name] = decodeInto(target[name] ?? blank(type.message), inner, type.message);
        }
      }
    }
  }
  return target;
}

function blank(schema) {
  const out = {};
  for (const [name, type] of Object.values(schema)) out[name] = defaultOf(type);
  return out;
}

export function decodeMessage(bytes, schema) {
  return decodeInto(blank(schema), bytes, schema);
}

export const schemas = (() => {
  const requestEnvelope = {
    1: ["protocol_version", "uint32"],
    2: ["device_session_id", "string"],
    3: ["message_type", "string"],
    4: ["request_id", "string"],
    5: ["timestamp_ms", "int64"],
    6: ["payload_hash", "bytes"],
    7: ["trace_id", "string"],
  };
  const responseEnvelope = {
    1: ["protocol_version", "uint32"],
    2: ["request_id", "string"],
    3: ["timestamp_ms", "int64"],
    4: ["result_code", "string"],
    5: ["payload_hash", "bytes"],
    6: ["trace_id", "string"],
  };
  const eventEnvelope = {
    1: ["protocol_version", "uint32"],
    2: ["event_id", "string"],
    3: ["event_type", "string"],
    4: ["timestamp_ms", "int64"],
    5: ["payload_hash", "bytes"],
    6: ["trace_id", "string"],
  };
  const signed = (envelope) => ({
    1: ["envelope", { message: envelope }],
    2: ["payload_bytes", "bytes"],
    3: ["signature", "bytes"],
  });
  const any = { 1: ["type_url", "string"], 2: ["value", "bytes"] };
  const metadataEntry = { 1: ["key", "string"], 2: ["value", "string"] };
  return Object.freeze({
    RequestEnvelope: requestEnvelope,
    ExecuteCommandRequest: signed(requestEnvelope),
    SubscribeEventsRequest: signed(requestEnvelope),
    ResponseEnvelope: responseEnvelope,
    ExecuteCommandResponse: signed(responseEnvelope),
    EventEnvelope: eventEnvelope,
    GatewayEvent: signed(eventEnvelope),
    // google.rpc.Status and the two details the gateway sends (docs/protocol.md section 3)
    Status: { 1: ["code", "int32"], 2: ["message", "string"], 3: ["details", { message: any, repeated: true }] },
    ErrorInfo: {
      1: ["reason", "string"],
      2: ["domain", "string"],
      3: ["metadata", { message: metadataEntry, repeated: true }],
    },
    RetryInfo: { 1: ["retry_delay", { message: { 1: ["seconds", "int64"], 2: ["nanos", "int32"] } }] },
  });
})();

// --- signing inputs (wire contract section 2) -------------------------------------------------------

const REQUEST_DOMAIN = utf8.encode("edgeward.request.v1\0");
const RESPONSE_DOMAIN = utf8.encode("edgeward.response.v1\0");
const EVENT_DOMAIN = utf8.encode("edgeward.event.v1\0");

function u32(value) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

function i64(value) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, BigInt.asIntN(64, BigInt(value)));
  return out;
}

function lp(value) {
  const bytes = typeof value === "string" ? utf8.encode(value) : value;
  return concatBytes(u32(bytes.length), bytes);
}

export function requestSigningInput(env) {
  return concatBytes(
    REQUEST_DOMAIN, u32(env.protocol_version), lp(env.device_session_id), lp(env.message_type),
    lp(env.request_id), i64(env.timestamp_ms), lp(env.payload_hash), lp(env.trace_id),
  );
}

export function responseSigningInput(env) {
  return concatBytes(
    RESPONSE_DOMAIN, u32(env.protocol_version), lp(env.request_id), i64(env.timestamp_ms),
    lp(env.result_code), lp(env.payload_hash), lp(env.trace_id),
  );
}

export function eventSigningInput(env) {
  return concatBytes(
    EVENT_DOMAIN, u32(env.protocol_version), lp(env.event_id), lp(env.event_type), i64(env.timestamp_ms),
    lp(env.payload_hash), lp(env.trace_id),
  );
}

// --- crypto (WebCrypto) -----------------------------------------------------------------------------

const ED25519 = { name: "Ed25519" };
// PKCS #8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410): only to import the test vectors' keys.
const PKCS8_ED25519_PREFIX = fromHex("302e020100300506032b657004220420");

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/**
 * A new device key: the private half is not extractable (it can sign, nothing can read it); the
 * public half is what confirm-email-code binds to the session, as standard base64 of its 32 raw bytes.
 */
export async function generateDeviceKey() {
  const pair = await crypto.subtle.generateKey(ED25519, false, ["sign", "verify"]);
  const publicKeyRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, publicKeyRaw, publicKeyB64: toBase64(publicKeyRaw) };
}

/** A device key from a fixed 32-byte seed (test vectors); its public key comes from the JWK. */
export async function deviceKeyFromSeed(seed) {
  if (seed.length !== 32) throw new Error("an Ed25519 seed is 32 bytes");
  const privateKey = await crypto.subtle.importKey("pkcs8", concatBytes(PKCS8_ED25519_PREFIX, seed), ED25519, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  const publicKeyRaw = fromBase64(jwk.x);
  const publicKey = await crypto.subtle.importKey("raw", publicKeyRaw, ED25519, true, ["verify"]);
  return { privateKey, publicKey, publicKeyRaw, publicKeyB64: toBase64(publicKeyRaw) };
}

/** The gateway's public key (standard base64 of its 32 raw bytes, e.g. the dev stack's gateway.pub). */
export async function importGatewayKey(key) {
  const raw = typeof key === "string" ? fromBase64(key.trim()) : key;
  if (raw.length !== 32) throw new Error(`a gateway public key is 32 bytes, not ${raw.length}`);
  return crypto.subtle.importKey("raw", raw, ED25519, false, ["verify"]);
}

export async function sign(privateKey, data) {
  return new Uint8Array(await crypto.subtle.sign(ED25519, privateKey, data));
}

export async function verifySignature(publicKey, signature, data) {
  if (signature.length !== 64) return false;
  return crypto.subtle.verify(ED25519, publicKey, signature, data);
}

// --- requests and verified answers -------------------------------------------------------------------

/** 32 random hex characters: unique per session without coordination (replay protection). */
export function newRequestId() {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

/** Bytes of a payload: a Uint8Array as is, anything else as JSON. */
export function payloadBytes(payload) {
  if (payload instanceof Uint8Array) return payload;
  if (payload === undefined) return new Uint8Array(0);
  return utf8.encode(JSON.stringify(payload));
}

/**
 * A signed ExecuteCommandRequest (or SubscribeEventsRequest: same shape) as an object; encode it
 * with encodeMessage(request, schemas.ExecuteCommandRequest).
 */
export async function buildSignedRequest(privateKey, deviceSessionId, messageType, payload, options = {}) {
  const body = payloadBytes(payload);
  const envelope = {
    protocol_version: PROTOCOL_VERSION,
    device_session_id: deviceSessionId,
    message_type: messageType,
    request_id: options.requestId ?? newRequestId(),
    timestamp_ms: BigInt(options.timestampMs ?? Date.now()),
    payload_hash: await sha256(body),
    trace_id: options.traceId ?? "",
  };
  const signature = await sign(privateKey, requestSigningInput(envelope));
  return { envelope, payload_bytes: body, signature };
}

function jsonOf(bytes) {
  return bytes.length === 0 ? null : JSON.parse(strictUtf8.decode(bytes));
}

async function checkSigned(payload, payloadHash, signingInput, signature, gatewayKey) {
  if (!digestEquals(await sha256(payload), payloadHash)) {
    throw new VerificationError("payload_hash does not match the payload");
  }
  if (!(await verifySignature(gatewayKey, signature, signingInput))) {
    throw new VerificationError("the gateway signature does not verify");
  }
}

function safeNumber(value) {
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : value;
}

/** The checked content of a decoded ExecuteCommandResponse, or VerificationError. */
export async function verifyResponse(response, gatewayKey, expectedRequestId) {
  const env = response.envelope;
  if (env === undefined) throw new VerificationError("response has no envelope");
  if (env.protocol_version !== PROTOCOL_VERSION) {
    throw new VerificationError(`unsupported response protocol_version ${env.protocol_version}`);
  }
  await checkSigned(response.payload_bytes, env.payload_hash, responseSigningInput(env), response.signature, gatewayKey);
  // Checked after the signature, so a mismatch is known to come from the gateway itself.
  if (env.request_id !== expectedRequestId) {
    throw new VerificationError(`response is for request ${env.request_id}, not ${expectedRequestId}`);
  }
  const payload = response.payload_bytes;
  return {
    resultCode: env.result_code,
    requestId: env.request_id,
    timestampMs: safeNumber(env.timestamp_ms),
    traceId: env.trace_id,
    payload,
    replayed: false,
    json: () => jsonOf(payload),
  };
}

/** The checked content of a decoded GatewayEvent, or VerificationError. */
export async function verifyEvent(event, gatewayKey) {
  const env = event.envelope;
  if (env === undefined) throw new VerificationError("event has no envelope");
  if (env.protocol_version !== PROTOCOL_VERSION) {
    throw new VerificationError(`unsupported event protocol_version ${env.protocol_version}`);
  }
  await checkSigned(event.payload_bytes, env.payload_hash, eventSigningInput(env), event.signature, gatewayKey);
  const payload = event.payload_bytes;
  return {
    eventId: env.event_id,
    eventType: env.event_type,
    timestampMs: safeNumber(env.timestamp_ms),
    traceId: env.trace_id,
    payload,
    json: () => jsonOf(payload),
  };
}

// --- gRPC-Web (grpc/grpc doc/PROTOCOL-WEB.md) --------------------------------------------------------

export const CODE_NAMES = Object.freeze([
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]);
const CODE = Object.freeze(Object.fromEntries(CODE_NAMES.map((name, i) => [name, i])));
const TRAILER_FLAG = 0x80;
const COMPRESSED_FLAG = 0x01;
const BASE64_CHARS = /^[A-Za-z0-9+/=]*$/;

export function contentType(mode) {
  if (mode === "binary") return "application/grpc-web+proto";
  if (mode === "text") return "application/grpc-web-text+proto";
  throw new Error(`mode is "binary" or "text", not ${JSON.stringify(mode)}`);
}

/** One gRPC-Web frame: flag byte, 4-byte big-endian length, data. */
export function frame(data, flag = 0) {
  return concatBytes(Uint8Array.of(flag), u32(data.length), data);
}

/**
 * Frames out of a response body that arrives in arbitrary pieces. In text mode the body is base64;
 * a server encodes each write on its own, padding included, so the text is decoded 4 characters at
 * a time and padding may appear in the middle of the stream.
 */
export class FrameParser {
  constructor(mode) {
    contentType(mode);
    this.text = mode === "text";
    this.pending = "";
    this.buffer = new Uint8Array(0);
  }

  push(chunk) {
    let bytes = chunk;
    if (this.text) {
      let chars = this.pending;
      for (let i = 0; i < chunk.length; i++) {
        const c = chunk[i];
        if (c !== 0x0d && c !== 0x0a && c !== 0x20 && c !== 0x09) chars += String.fromCharCode(c);
      }
      const whole = chars.length - (chars.length % 4);
      this.pending = chars.slice(whole);
      bytes = decodeBase64Groups(chars.slice(0, whole));
    }
    this.buffer = this.buffer.length === 0 ? bytes : concatBytes(this.buffer, bytes);
    const frames = [];
    while (this.buffer.length >= 5) {
      const length = new DataView(this.buffer.buffer, this.buffer.byteOffset, 5).getUint32(1);
      if (this.buffer.length < 5 + length) break;
      frames.push({ flag: this.buffer[0], data: this.buffer.slice(5, 5 + length) });
      this.buffer = this.buffer.subarray(5 + length);
    }
    return frames;
  }

  /** Throws when the body ended in the middle of a frame. */
  end() {
    if (this.pending.length !== 0 || this.buffer.length !== 0) {
      throw new DecodeError("the response body ended in the middle of a frame");
    }
  }
}

function decodeBase64Groups(text) {
  if (!BASE64_CHARS.test(text)) throw new DecodeError("a grpc-web-text body that is not base64");
  const pieces = [];
  let start = 0;
  for (let at = 0; at < text.length; at += 4) {
    if (text.charCodeAt(at + 3) === 0x3d) {  // "=": this group ends an encoded piece
      pieces.push(fromBase64Strict(text.slice(start, at + 4)));
      start = at + 4;
    }
  }
  if (start < text.length) pieces.push(fromBase64Strict(text.slice(start)));
  return pieces.length === 1 ? pieces[0] : concatBytes(...pieces);
}

function fromBase64Strict(text) {
  let binary;
  try {
    binary = atob(text);
  } catch {
    throw new DecodeError("a grpc-web-text body that is not base64");
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** The trailer frame's HTTP/1-style header block, as a Map of lower-case names. */
export function parseTrailers(bytes) {
  const map = new Map();
  for (const line of new TextDecoder().decode(bytes).split(/\r?\n/)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new DecodeError(`malformed trailer line ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    map.set(name, map.has(name) ? `${map.get(name)}, ${value}` : value);
  }
  return map;
}

function percentDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/**
 * The status a call ended with, from trailers (a Map) or a trailers-only response's headers
 * (a Headers): `reason` is the ErrorInfo reason when the details carry one (the contract's stable
 * code), else the grpc-message; `metadata` is the ErrorInfo metadata; `retryAfterMs` is RetryInfo.
 */
export function statusFrom(headers) {
  const raw = headers.get("grpc-status");
  const code = raw !== null && raw !== undefined && /^[0-9]+$/.test(raw.trim()) ? Number(raw.trim()) : CODE.UNKNOWN;
  const message = percentDecode(headers.get("grpc-message") ?? "");
  const status = {
    code,
    codeName: CODE_NAMES[code] ?? `CODE_${code}`,
    message,
    reason: message || (CODE_NAMES[code] ?? `code_${code}`).toLowerCase(),
    metadata: {},
    retryAfterMs: null,
    replayed: headers.get("edgeward-replayed") === "1",
  };
  const details = headers.get("grpc-status-details-bin");
  if (details) {
    try {
      Object.assign(status, errorDetails(fromBase64(details), status.reason));
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;  // details that do not parse never hide the status
    }
  }
  return status;
}

/** ErrorInfo's reason and metadata and RetryInfo's delay out of a serialized google.rpc.Status. */
export function errorDetails(statusBytes, fallbackReason = "") {
  const decoded = decodeMessage(statusBytes, schemas.Status);
  const out = { reason: fallbackReason, metadata: {}, retryAfterMs: null };
  for (const detail of decoded.details) {
    const type = detail.type_url.slice(detail.type_url.lastIndexOf("/") + 1);
    if (type === "google.rpc.ErrorInfo") {
      const info = decodeMessage(detail.value, schemas.ErrorInfo);
      out.reason = info.reason;
      out.domain = info.domain;
      for (const entry of info.metadata) out.metadata[entry.key] = entry.value;
    } else if (type === "google.rpc.RetryInfo") {
      const delay = decodeMessage(detail.value, schemas.RetryInfo).retry_delay;
      if (delay !== undefined) out.retryAfterMs = Number(delay.seconds) * 1000 + Math.floor(delay.nanos / 1e6);
    }
  }
  return out;
}

// HTTP statuses of a response that is not gRPC-Web at all (PROTOCOL-WEB.md: as gRPC maps them).
const HTTP_CODES = { 400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED",
  429: "UNAVAILABLE", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE" };

function transportStatus(codeName, message) {
  return { code: CODE[codeName], codeName, message, reason: message, metadata: {}, retryAfterMs: null, replayed: false };
}

/**
 * Read a gRPC-Web response: yields {message: Uint8Array} for each message frame, then, last,
 * {status} (OK or not). A trailers-only response (status in the HTTP headers, empty body) yields
 * only its status; `status.trailersOnly` says which form the status came in. Throws DecodeError
 * on a malformed body, and whatever the body's reader throws (a network failure, an abort).
 */
export async function* readGrpcWeb(response, mode) {
  if (response.status !== 200) {
    await response.body?.cancel();
    yield { status: transportStatus(HTTP_CODES[response.status] ?? "UNKNOWN", `http_${response.status}`) };
    return;
  }
  if (response.headers.get("grpc-status") !== null) {  // trailers-only
    await response.body?.cancel();
    yield { status: { ...statusFrom(response.headers), trailersOnly: true } };
    return;
  }
  const type = (response.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (!type.startsWith("application/grpc-web")) {
    await response.body?.cancel();
    yield { status: transportStatus("UNKNOWN", `unexpected content-type ${JSON.stringify(type)}`) };
    return;
  }
  const bodyMode = type.startsWith("application/grpc-web-text") ? "text" : "binary";
  if (bodyMode !== mode) throw new DecodeError(`asked for a ${mode} answer, got ${type}`);
  const parser = new FrameParser(bodyMode);
  const reader = response.body.getReader();
  let trailers = null;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const f of parser.push(value)) {
        if (trailers !== null) throw new DecodeError("a frame after the trailers");
        if (f.flag & TRAILER_FLAG) trailers = parseTrailers(f.data);
        else if (f.flag & COMPRESSED_FLAG) throw new DecodeError("a compressed frame (none was asked for)");
        else yield { message: f.data };
      }
    }
  } finally {
    reader.releaseLock();
  }
  parser.end();
  if (trailers === null) {
    // No trailers: not a status the server chose (a proxy cut the stream, or the server died).
    yield { status: transportStatus("UNAVAILABLE", "the stream ended without trailers") };
    return;
  }
  yield { status: { ...statusFrom(trailers), trailersOnly: false } };
}

/**
 * POST one request message to `<baseUrl>/edgeward.v1.EdgeGateway/<method>`; the fetch Response.
 * `timeoutMs`, when given, is sent as `grpc-timeout` so the gateway knows the client's deadline.
 */
export async function postGrpcWeb(baseUrl, method, messageBytes, mode, signal, timeoutMs = null) {
  const type = contentType(mode);
  const body = frame(messageBytes);
  const headers = { "content-type": type, accept: type, "x-grpc-web": "1" };
  if (timeoutMs !== null) headers["grpc-timeout"] = `${Math.max(1, Math.ceil(timeoutMs))}m`;
  return fetch(`${baseUrl.replace(/\/+$/, "")}/${SERVICE}/${method}`, {
    method: "POST",
    headers,
    body: mode === "text" ? toBase64(body) : body,
    signal,
    mode: "cors",
    credentials: "omit",
    cache: "no-store",
  });
}

// --- the public auth API -----------------------------------------------------------------------------

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    mode: "cors",
    credentials: "omit",
    cache: "no-store",
  });
  const text = await response.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (response.status >= 400) {
    const error = parsed?.error;
    if (error && typeof error === "object") throw new AuthError(response.status, String(error.code ?? ""), String(error.message ?? ""));
    throw new AuthError(response.status, `http_${response.status}`, text.slice(0, 200));
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new AuthError(response.status, "malformed_response", `${url} did not answer a JSON object`);
  }
  return parsed;
}

function field(answer, name, url) {
  const value = answer[name];
  if (typeof value !== "string" || value === "") throw new AuthError(200, "malformed_response", `${url} answered without ${name}`);
  return value;
}

/** Ask for a login code to be mailed; the challenge id to confirm it with. */
export async function sendEmailCode(publicUrl, email) {
  const url = `${publicUrl.replace(/\/+$/, "")}/api/v1/public/auth/send-email-code`;
  return field(await postJson(url, { email }), "challenge_id", url);
}

/** Bind the device's public key (standard base64 of its 32 raw bytes) to a new device session: its id. */
export async function confirmEmailCode(publicUrl, challengeId, code, clientPublicKeyB64) {
  const url = `${publicUrl.replace(/\/+$/, "")}/api/v1/public/auth/confirm-email-code`;
  const body = { challenge_id: challengeId, code, client_public_key: clientPublicKeyB64 };
  return field(await postJson(url, body), "device_session_id", url);
}

// --- the client ----------------------------------------------------------------------------------------

// Failures that leave an ExecuteCommand's outcome unknown, so the very same signed request may be
// sent again (docs/replay.md, "Idempotent retry"): the gateway runs it at most once and answers a
// retry with the first call's kept response.
const RETRY_CODES = new Set([CODE.UNAVAILABLE, CODE.DEADLINE_EXCEEDED, CODE.CANCELLED]);
const RETRY_REASONS = new Set(["request_in_flight", "replay_store_unavailable", "shutting_down"]);
const GATEWAY_REASONS = new Set([
  "invalid_envelope", "unsupported_protocol_version", "payload_too_large", "payload_hash_mismatch",
  "session_not_found", "invalid_signature", "session_revoked", "stale_request", "replayed_request",
  "rate_limited", "unknown_message_type", "backend_unavailable", "replay_store_unavailable", "shutting_down",
  "backend_timeout", "internal_error", "slow_consumer", "too_many_streams", "limiter_unavailable",
  "request_in_flight",
]);

function mayRetry(status) {
  return RETRY_CODES.has(status.code) && (RETRY_REASONS.has(status.reason) || !GATEWAY_REASONS.has(status.reason));
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One device session talking to one gateway's gRPC-Web listener.
 *
 * options: grpcWebUrl; gatewayKey (a CryptoKey from importGatewayKey); deviceKey ({privateKey}, from
 * generateDeviceKey); deviceSessionId (may be set later); mode ("binary" or "text", per call too).
 */
export class EdgewardClient {
  constructor({ grpcWebUrl, gatewayKey, deviceKey, deviceSessionId = null, mode = "binary" }) {
    contentType(mode);
    this.grpcWebUrl = grpcWebUrl;
    this.gatewayKey = gatewayKey;
    this.deviceKey = deviceKey;
    this.deviceSessionId = deviceSessionId;
    this.mode = mode;
  }

  async #sign(messageType, payload, options) {
    if (!this.deviceSessionId) throw new Error("no device session: log in first");
    return buildSignedRequest(this.deviceKey.privateKey, this.deviceSessionId, messageType, payload, options);
  }

  /**
   * Send one signed command and return its verified result ({resultCode, payload, json(), requestId,
   * timestampMs, traceId, replayed}). A backend error is a resultCode, not an exception; a rejection
   * throws GatewayError (its `reason` is the contract's stable code), an answer that does not verify
   * throws VerificationError. A call whose outcome is unknown is resent as the very same signed
   * request, up to `attempts` calls in all. `requestId` and `timestampMs` are for tests: the same
   * ones with the same payload make the very same signed request (Ed25519 is deterministic).
   */
  async execute(messageType, payload = {}, { traceId = "", requestId, timestampMs, mode = this.mode, attempts = 3, timeoutMs = 10_000 } = {}) {
    const request = await this.#sign(messageType, payload, { traceId, requestId, timestampMs });
    const bytes = encodeMessage(request, schemas.ExecuteCommandRequest);
    let backoff = 100;
    for (let attempt = 1; ; attempt++) {
      let status = null;
      let response = null;
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), timeoutMs);
      try {
        for await (const item of readGrpcWeb(await postGrpcWeb(this.grpcWebUrl, "ExecuteCommand", bytes, mode, abort.signal, timeoutMs), mode)) {
          if (item.message !== undefined) {
            if (response !== null) throw new DecodeError("more than one response message");
            response = item.message;
          } else {
            status = item.status;
          }
        }
      } catch (err) {
        if (err instanceof DecodeError) throw err;
        // fetch() failed (no connection, CORS refused) or our deadline aborted it: outcome unknown.
        status = abort.signal.aborted
          ? transportStatus("DEADLINE_EXCEEDED", "deadline_exceeded")
          : transportStatus("UNAVAILABLE", `network error: ${err.message}`);
      } finally {
        clearTimeout(timer);
      }
      if (status.code === CODE.OK) {
        if (response === null) throw new DecodeError("the call ended OK without a response");
        const result = await verifyResponse(decodeMessage(response, schemas.ExecuteCommandResponse), this.gatewayKey, request.envelope.request_id);
        result.replayed = status.replayed;
        return result;
      }
      if (attempt >= attempts || !mayRetry(status)) throw new GatewayError(status);
      await delay(status.retryAfterMs ?? backoff);
      backoff *= 2;
    }
  }

  /**
   * Open a SubscribeEvents stream. Each verified event goes to `onEvent(event)`; the returned
   * Subscription's `done` resolves with the status that ended the stream (e.g. FAILED_PRECONDITION
   * session_revoked) and rejects on an event that does not verify (the stream is cut then) or a
   * malformed body. `resumeAfter`: the event_id of the last event an earlier stream delivered.
   */
  subscribe({ onEvent = () => {}, options, resumeAfter, traceId = "", mode = this.mode } = {}) {
    const body = resumeAfter === undefined || resumeAfter === null ? options : { ...(options ?? {}), resume_after: resumeAfter };
    return new Subscription(this, body, { traceId, mode, onEvent });
  }

  async _openStream(payload, traceId) {
    const request = await this.#sign(SUBSCRIBE_MESSAGE_TYPE, payload, { traceId });
    return { request, bytes: encodeMessage(request, schemas.SubscribeEventsRequest) };
  }
}

export class Subscription {
  constructor(client, options, { traceId, mode, onEvent }) {
    this.client = client;
    this.mode = mode;
    this.requestId = null;
    this.events = [];
    this.lastEventId = null;
    this.status = null;
    this.#abort = new AbortController();
    this.#onEvent = onEvent;
    this.#waiters = [];
    this.done = this.#run(options, traceId);
    const ended = () => {
      this.#ended = true;
      this.#wake();
    };
    this.done.then(ended, ended);
  }

  #abort;
  #onEvent;
  #waiters;
  #ended = false;

  /** Stop reading: the stream ends (done resolves with CANCELLED). */
  cancel() {
    this.#abort.abort();
  }

  /** Resolves once `count` events have been delivered in all (rejects if the stream ended first). */
  waitForEvents(count, timeoutMs = 30_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`timed out waiting for event ${count}`)), timeoutMs);
      const finish = (error) => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== check);
        if (error) reject(error);
        else resolve(this.events.slice(0, count));
      };
      const check = () => {
        if (this.events.length >= count) finish(null);
        else if (this.#ended) {
          const how = this.status === null ? "with an error" : `(${this.status.codeName} ${this.status.reason})`;
          finish(new Error(`the stream ended ${how} before event ${count}`));
        }
      };
      this.#waiters.push(check);
      check();
    });
  }

  #wake() {
    for (const check of [...this.#waiters]) check();
  }

  async #run(options, traceId) {
    const payload = options === undefined || options === null ? new Uint8Array(0) : payloadBytes(options);
    const { request, bytes } = await this.client._openStream(payload, traceId);
    this.requestId = request.envelope.request_id;
    try {
      const response = await postGrpcWeb(this.client.grpcWebUrl, "SubscribeEvents", bytes, this.mode, this.#abort.signal);
      for await (const item of readGrpcWeb(response, this.mode)) {
        if (item.status !== undefined) {
          this.status = item.status;
          break;
        }
        const event = await verifyEvent(decodeMessage(item.message, schemas.GatewayEvent), this.client.gatewayKey);
        if (this.events.length === 0) {
          const greeting = event.eventType === "gateway.server_time" ? event.json() : null;
          if (greeting?.request_id !== this.requestId) {
            throw new VerificationError("the stream did not open with this subscription's gateway.server_time");
          }
        }
        this.events.push(event);
        this.lastEventId = event.eventId;
        this.#wake();
        this.#onEvent(event);
      }
    } catch (err) {
      if (this.#abort.signal.aborted) {
        this.status = transportStatus("CANCELLED", "cancelled");
      } else if (err instanceof VerificationError || err instanceof DecodeError) {
        this.#abort.abort();
        throw err;
      } else {
        this.status = transportStatus("UNAVAILABLE", `network error: ${err.message}`);
      }
    }
    return this.status;
  }
}
