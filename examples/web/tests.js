// tests.js: unit checks of edgeward-web.js, run in the browser (tests.html).
//
// `runEdgewardTests(fixtures)` checks the signing inputs, SHA-256, Ed25519 keys and signatures against
// the project's test vectors (tests/vectors/signing.json), the protobuf encodings against the ones the
// Python protobuf runtime produced (the fixtures tests/integration/test_browser.py passes), the error
// details, and the gRPC-Web framing in both modes. Without fixtures it reads the vectors from
// ../../tests/vectors/signing.json (serve the repository root to open tests.html that way); the
// protobuf fixtures come only from the Python test. Returns {passed: [names], failed: [{name, error}]}.
import * as ew from "./edgeward-web.js";

const utf8 = new TextEncoder();

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function equalHex(actual, expectedHex, what) {
  const hex = ew.toHex(actual);
  assert(hex === expectedHex, `${what}: ${hex} != ${expectedHex}`);
}

async function rejects(promise, type, pattern, what) {
  try {
    await promise;
  } catch (err) {
    assert(err instanceof type, `${what}: threw ${err.name}: ${err.message}, not ${type.name}`);
    assert(pattern.test(err.message), `${what}: ${err.message} does not match ${pattern}`);
    return;
  }
  throw new Error(`${what}: did not throw`);
}

function envelopeOf(vector) {
  // timestamp_ms comes as a string or a Number: int64 extremes do not fit a JS Number.
  return { ...vector.envelope, timestamp_ms: BigInt(vector.envelope.timestamp_ms), payload_hash: ew.fromHex(vector.payload_hash_hex) };
}

function sameEnvelope(decoded, expected, what) {
  for (const [name, value] of Object.entries(expected)) {
    const got = decoded[name];
    const same = value instanceof Uint8Array ? ew.toHex(got) === ew.toHex(value) : got === value;
    assert(same, `${what}.${name}: ${got} != ${value}`);
  }
}

function streamOf(chunks) {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

function split(bytes, size) {
  const out = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

async function readAll(response, mode) {
  const items = [];
  for await (const item of ew.readGrpcWeb(response, mode)) items.push(item);
  return items;
}

function webResponse(chunks, mode, headers = {}) {
  return new Response(streamOf(chunks), { status: 200, headers: { "content-type": ew.contentType(mode), ...headers } });
}

const TRAILER = 0x80;

function trailerFrame(text) {
  return ew.frame(utf8.encode(text), TRAILER);
}

async function loadVectors() {
  const response = await fetch("../../tests/vectors/signing.json", { cache: "no-store" });
  if (!response.ok) throw new Error("no fixtures given and ../../tests/vectors/signing.json is not served");
  // Every timestamp_ms as a string before JSON.parse: int64 extremes do not fit a JS Number.
  return JSON.parse((await response.text()).replace(/"timestamp_ms": (-?[0-9]+)/g, '"timestamp_ms": "$1"'));
}

export async function runEdgewardTests(fixtures = null) {
  const given = fixtures ?? { vectors: await loadVectors() };
  const { vectors, protobuf = null, statusDetails = [] } = given;
  const cases = [];
  const test = (name, body) => cases.push([name, body]);

  for (const vector of vectors.request) {
    test(`request vector ${vector.name}: key, hash, signing input, signature`, async () => {
      const key = await ew.deviceKeyFromSeed(ew.fromHex(vector.seed_hex));
      equalHex(key.publicKeyRaw, vector.public_key_hex, "public key");
      assert(key.publicKeyB64 === vector.public_key_b64, "public key base64");
      const payload = ew.fromHex(vector.payload_bytes_hex);
      equalHex(await ew.sha256(payload), vector.payload_hash_hex, "payload hash");
      const input = ew.requestSigningInput(envelopeOf(vector));
      equalHex(input, vector.signing_input_hex, "signing input");
      const signature = await ew.sign(key.privateKey, input);
      equalHex(signature, vector.signature_hex, "signature");
      assert(await ew.verifySignature(key.publicKey, signature, input), "the signature verifies");
      const built = await ew.buildSignedRequest(key.privateKey, vector.envelope.device_session_id, vector.envelope.message_type, payload, {
        requestId: vector.envelope.request_id, timestampMs: BigInt(vector.envelope.timestamp_ms), traceId: vector.envelope.trace_id,
      });
      equalHex(built.signature, vector.signature_hex, "buildSignedRequest's signature");
    });
  }
  for (const vector of vectors.response) {
    test(`response vector ${vector.name}: signing input and verification`, async () => {
      const env = envelopeOf(vector);
      equalHex(ew.responseSigningInput(env), vector.signing_input_hex, "signing input");
      const key = await ew.importGatewayKey(vector.public_key_b64);
      const response = { envelope: env, payload_bytes: ew.fromHex(vector.payload_bytes_hex), signature: ew.fromHex(vector.signature_hex) };
      const result = await ew.verifyResponse(response, key, vector.envelope.request_id);
      assert(result.resultCode === vector.envelope.result_code, "result code");
    });
  }
  for (const vector of vectors.event) {
    test(`event vector ${vector.name}: signing input and verification`, async () => {
      const env = envelopeOf(vector);
      equalHex(ew.eventSigningInput(env), vector.signing_input_hex, "signing input");
      const key = await ew.importGatewayKey(vector.public_key_b64);
      const event = { envelope: env, payload_bytes: ew.fromHex(vector.payload_bytes_hex), signature: ew.fromHex(vector.signature_hex) };
      const verified = await ew.verifyEvent(event, key);
      assert(verified.eventType === vector.envelope.event_type && verified.eventId === vector.envelope.event_id, "event fields");
    });
  }

  test("verification refuses a changed payload, signature, key or request id", async () => {
    const vector = vectors.response[0];
    const key = await ew.importGatewayKey(vector.public_key_b64);
    const other = await ew.importGatewayKey(vectors.response[1].public_key_b64);
    const good = () => ({ envelope: envelopeOf(vector), payload_bytes: ew.fromHex(vector.payload_bytes_hex), signature: ew.fromHex(vector.signature_hex) });
    const id = vector.envelope.request_id;
    const changedPayload = good();
    changedPayload.payload_bytes = utf8.encode('{"display_name":"Eve"}');
    await rejects(ew.verifyResponse(changedPayload, key, id), ew.VerificationError, /payload_hash/, "changed payload");
    const changedSignature = good();
    changedSignature.signature[10] ^= 1;
    await rejects(ew.verifyResponse(changedSignature, key, id), ew.VerificationError, /signature/, "changed signature");
    const shortSignature = good();
    shortSignature.signature = shortSignature.signature.subarray(0, 63);
    await rejects(ew.verifyResponse(shortSignature, key, id), ew.VerificationError, /signature/, "short signature");
    const changedCode = good();
    changedCode.envelope.result_code = "not_ok";
    await rejects(ew.verifyResponse(changedCode, key, id), ew.VerificationError, /signature/, "changed result code");
    await rejects(ew.verifyResponse(good(), other, id), ew.VerificationError, /signature/, "another gateway key");
    await rejects(ew.verifyResponse(good(), key, "someone-else-0001"), ew.VerificationError, /request/, "another request id");
    await rejects(ew.verifyResponse({ payload_bytes: new Uint8Array(0), signature: new Uint8Array(64) }, key, id),
      ew.VerificationError, /no envelope/, "no envelope");
    const otherVersion = good();
    otherVersion.envelope.protocol_version = 2;
    await rejects(ew.verifyResponse(otherVersion, key, id), ew.VerificationError, /protocol_version/, "protocol version 2");
    const event = vectors.event[0];
    const changedEvent = { envelope: { ...envelopeOf(event), event_type: "user.other" }, payload_bytes: ew.fromHex(event.payload_bytes_hex), signature: ew.fromHex(event.signature_hex) };
    await rejects(ew.verifyEvent(changedEvent, await ew.importGatewayKey(event.public_key_b64)), ew.VerificationError, /signature/, "changed event type");
  });

  if (protobuf !== null) {
    for (const expected of protobuf.request) {
      const vector = vectors.request.find((v) => v.name === expected.name);
      test(`protobuf ${expected.name}: requests encode as the Python runtime does`, async () => {
        const message = { envelope: envelopeOf(vector), payload_bytes: ew.fromHex(vector.payload_bytes_hex), signature: ew.fromHex(vector.signature_hex) };
        equalHex(ew.encodeMessage(message, ew.schemas.ExecuteCommandRequest), expected.execute_hex, "ExecuteCommandRequest");
        equalHex(ew.encodeMessage(message, ew.schemas.SubscribeEventsRequest), expected.subscribe_hex, "SubscribeEventsRequest");
        const decoded = ew.decodeMessage(ew.fromHex(expected.execute_hex), ew.schemas.ExecuteCommandRequest);
        sameEnvelope(decoded.envelope, envelopeOf(vector), "decoded envelope");
        equalHex(decoded.signature, vector.signature_hex, "decoded signature");
      });
    }
    for (const [kind, schema, verify] of [
      ["response", ew.schemas.ExecuteCommandResponse, (m, key, v) => ew.verifyResponse(m, key, v.envelope.request_id)],
      ["event", ew.schemas.GatewayEvent, (m, key) => ew.verifyEvent(m, key)],
    ]) {
      for (const expected of protobuf[kind]) {
        const vector = vectors[kind].find((v) => v.name === expected.name);
        test(`protobuf ${kind} ${expected.name}: decodes (unknown fields skipped) and verifies`, async () => {
          const key = await ew.importGatewayKey(vector.public_key_b64);
          for (const hex of [expected.hex, expected.with_unknown_fields_hex]) {
            const decoded = ew.decodeMessage(ew.fromHex(hex), schema);
            sameEnvelope(decoded.envelope, envelopeOf(vector), `${kind} envelope`);
            equalHex(decoded.payload_bytes, vector.payload_bytes_hex, "payload");
            await verify(decoded, key, vector);
          }
          const encoded = ew.encodeMessage(ew.decodeMessage(ew.fromHex(expected.hex), schema), schema);
          equalHex(encoded, expected.hex, "encoded again");
        });
      }
    }
    test("protobuf: malformed bytes are refused", async () => {
      const hex = protobuf.response[0].hex;
      const bytes = ew.fromHex(hex);
      const refuse = (b, pattern, what) => {
        try {
          ew.decodeMessage(b, ew.schemas.ExecuteCommandResponse);
        } catch (err) {
          assert(err instanceof ew.DecodeError && pattern.test(err.message), `${what}: ${err.name} ${err.message}`);
          return;
        }
        throw new Error(`${what}: decoded`);
      };
      refuse(bytes.subarray(0, bytes.length - 1), /truncated/, "truncated message");
      refuse(Uint8Array.of(0x78, 0x80), /truncated varint/, "a truncated varint (an unknown field)");
      refuse(Uint8Array.of(0x08, 0x01), /wire type/, "the envelope with the varint wire type");
      refuse(Uint8Array.of(0x0a, 0x04, 0x12, 0x02, 0xc3, 0x28), /UTF-8/, "bad UTF-8 in envelope.request_id");
      refuse(Uint8Array.of(0x0a, 0x01, 0x08), /truncated/, "a field cut inside the envelope");
      refuse(Uint8Array.of(0x10, 0x01), /wire type/, "payload_bytes with the varint wire type");
    });
  }

  for (const expected of statusDetails) {
    test(`status details ${expected.reason}: ErrorInfo and RetryInfo`, async () => {
      const status = ew.statusFrom(new Headers({
        "grpc-status": String(expected.code), "grpc-message": expected.reason, "grpc-status-details-bin": expected.b64,
      }));
      assert(status.code === expected.code && status.reason === expected.reason, `status ${JSON.stringify(status)}`);
      assert(JSON.stringify(status.metadata) === JSON.stringify(expected.metadata), `metadata ${JSON.stringify(status.metadata)}`);
      assert(status.retryAfterMs === expected.retry_after_ms, `retry after ${status.retryAfterMs}`);
      const unpadded = ew.statusFrom(new Map([["grpc-status", String(expected.code)], ["grpc-status-details-bin", expected.b64.replace(/=+$/, "")]]));
      assert(unpadded.reason === expected.reason, "unpadded details");
    });
  }

  test("gRPC-Web binary: frames split anywhere, trailer frame, replayed flag", async () => {
    const one = utf8.encode("first message");
    const two = new Uint8Array(300).fill(7);
    const body = ew.concatBytes(ew.frame(one), ew.frame(two), trailerFrame("grpc-status: 0\r\ngrpc-message: \r\nedgeward-replayed: 1\r\n"));
    for (const size of [1, 2, 3, 5, 6, 7, 64, body.length]) {
      const items = await readAll(webResponse(split(body, size), "binary"), "binary");
      assert(items.length === 3, `${size}: ${items.length} items`);
      equalHex(items[0].message, ew.toHex(one), `${size}: first`);
      equalHex(items[1].message, ew.toHex(two), `${size}: second`);
      const status = items[2].status;
      assert(status.code === 0 && status.replayed && !status.trailersOnly, `${size}: status ${JSON.stringify(status)}`);
    }
  });

  test("gRPC-Web text: each write base64 with its own padding, split anywhere", async () => {
    const one = utf8.encode("a");  // frames of 6 and 7 bytes: padded base64 in the middle of the body
    const two = utf8.encode("bc");
    const trailer = trailerFrame("grpc-status: 9\r\ngrpc-message: session%20revoked\r\n");
    const text = [ew.frame(one), ew.frame(two), trailer].map(ew.toBase64).join("");
    assert(text.indexOf("=") < text.length - 4, "padding in the middle");
    const body = utf8.encode(text);
    for (const size of [1, 2, 3, 4, 5, 7, 13, body.length]) {
      const items = await readAll(webResponse(split(body, size), "text"), "text");
      assert(items.length === 3, `${size}: ${items.length} items`);
      equalHex(items[0].message, ew.toHex(one), `${size}: first`);
      equalHex(items[1].message, ew.toHex(two), `${size}: second`);
      const status = items[2].status;
      assert(status.code === 9 && status.codeName === "FAILED_PRECONDITION" && status.reason === "session revoked", `${size}: ${JSON.stringify(status)}`);
    }
    const whole = ew.concatBytes(ew.frame(one), ew.frame(two), trailer);  // one base64 run for all of it
    const items = await readAll(webResponse([utf8.encode(ew.toBase64(whole))], "text"), "text");
    assert(items.length === 3 && items[2].status.code === 9, "unsplit base64");
  });

  test("gRPC-Web trailers-only: the status in the headers, nothing else", async () => {
    for (const mode of ew.MODES) {
      const statusBytes = statusDetails[0] ? statusDetails[0].b64 : null;
      const headers = { "grpc-status": "7", "grpc-message": "denied" };
      if (statusBytes) headers["grpc-status-details-bin"] = statusBytes;
      const items = await readAll(webResponse([], mode, headers), mode);
      assert(items.length === 1 && items[0].status.code === 7 && items[0].status.trailersOnly, `${mode}: ${JSON.stringify(items)}`);
      if (statusBytes) assert(items[0].status.reason === statusDetails[0].reason, `${mode}: reason from the details`);
    }
  });

  test("gRPC-Web: a body cut short or without trailers, an HTTP error", async () => {
    const cut = ew.frame(utf8.encode("hello")).subarray(0, 7);
    await rejects(readAll(webResponse([cut], "binary"), "binary"), ew.DecodeError, /middle of a frame/, "cut frame");
    const noTrailers = await readAll(webResponse([ew.frame(utf8.encode("x"))], "binary"), "binary");
    assert(noTrailers.length === 2 && noTrailers[1].status.codeName === "UNAVAILABLE", "missing trailers");
    const http = await readAll(new Response("no", { status: 404 }), "binary");
    assert(http.length === 1 && http[0].status.codeName === "UNIMPLEMENTED", "HTTP 404");
    await rejects(readAll(webResponse([utf8.encode("!!!!")], "text"), "text"), ew.DecodeError, /base64/, "bad base64");
  });

  test("gRPC-Web request framing in both modes", async () => {
    const message = utf8.encode("xyz");
    equalHex(ew.frame(message), "0000000003" + ew.toHex(message), "frame");
    const parser = new ew.FrameParser("text");
    const frames = parser.push(utf8.encode(ew.toBase64(ew.frame(message))));
    parser.end();
    assert(frames.length === 1 && ew.toHex(frames[0].data) === ew.toHex(message), "text round trip");
  });

  test("a new device key: 32 raw bytes, private half not extractable, signatures verify", async () => {
    const key = await ew.generateDeviceKey();
    assert(key.publicKeyRaw.length === 32 && ew.fromBase64(key.publicKeyB64).length === 32, "32-byte public key");
    assert(key.privateKey.extractable === false, "the private key cannot be exported");
    const data = utf8.encode("edgeward");
    const signature = await ew.sign(key.privateKey, data);
    assert(await ew.verifySignature(await ew.importGatewayKey(key.publicKeyB64), signature, data), "verifies");
  });

  const passed = [];
  const failed = [];
  for (const [name, body] of cases) {
    try {
      await body();
      passed.push(name);
    } catch (err) {
      failed.push({ name, error: `${err.name}: ${err.message}` });
    }
  }
  return { passed, failed };
}

window.runEdgewardTests = runEdgewardTests;
