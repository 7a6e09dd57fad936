// app.js: the page of index.html. Every button runs one method of `app`, which is also exposed as
// `window.edgewardApp` (and the client module as `window.edgeward`) so a test can drive the page the
// way the buttons do. Configuration: the form, prefilled from the query string
// (?grpc=<gRPC-Web URL>&public=<public auth URL>&key=<gateway public key, base64>&mode=binary|text&email=...).
import * as edgeward from "./edgeward-web.js";

const $ = (id) => document.getElementById(id);

const state = {
  deviceKey: null,
  challengeId: null,
  client: null,
  subscriptions: [],
};

function log(text, kind = "") {
  const line = document.createElement("div");
  line.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  if (kind) line.className = kind;
  $("log").prepend(line);
}

function describe(err) {
  if (err instanceof edgeward.GatewayError) {
    return { kind: "gateway", code: err.code, codeName: err.codeName, reason: err.reason, metadata: err.metadata,
      retryAfterMs: err.retryAfterMs, trailersOnly: err.trailersOnly };
  }
  if (err instanceof edgeward.AuthError) return { kind: "auth", status: err.status, code: err.code, message: err.detail };
  return { kind: err?.name ?? "Error", message: String(err?.message ?? err) };
}

function readConfig() {
  return {
    grpcWebUrl: $("grpc-web-url").value.trim(),
    publicUrl: $("public-url").value.trim(),
    gatewayKey: $("gateway-key").value.trim(),
    mode: $("mode").value,
  };
}

function applyQuery() {
  const query = new URLSearchParams(location.search);
  const set = (name, id) => {
    if (query.has(name)) $(id).value = query.get(name);
  };
  set("grpc", "grpc-web-url");
  set("public", "public-url");
  set("mode", "mode");
  set("email", "email");
  // A "+" of the base64 key arrives as a space unless the link percent-encoded it.
  if (query.has("key")) $("gateway-key").value = query.get("key").replace(/ /g, "+");
}

async function client() {
  if (state.client === null) throw new Error("log in first");
  const config = readConfig();
  state.client.grpcWebUrl = config.grpcWebUrl;
  state.client.gatewayKey = await edgeward.importGatewayKey(config.gatewayKey);
  state.client.mode = config.mode;
  return state.client;
}

function eventLine(event) {
  const payload = new TextDecoder().decode(event.payload);
  return `${event.eventType} ${event.eventId} @${event.timestampMs} ${payload}`;
}

const app = {
  state,

  /** A fresh Ed25519 device key (WebCrypto; the private half cannot be exported). */
  async newKey() {
    state.deviceKey = await edgeward.generateDeviceKey();
    $("device-key").textContent = state.deviceKey.publicKeyB64;
    log(`new device key ${state.deviceKey.publicKeyB64}`);
    return state.deviceKey.publicKeyB64;
  },

  async sendCode(email = $("email").value.trim()) {
    $("email").value = email;
    state.challengeId = await edgeward.sendEmailCode(readConfig().publicUrl, email);
    log(`code sent to ${email} (challenge ${state.challengeId})`);
    return state.challengeId;
  },

  /** confirm-email-code with this device's public key; the client is ready for commands after it. */
  async confirm(code = $("code").value.trim()) {
    $("code").value = code;
    if (state.challengeId === null) throw new Error("send a code first");
    if (state.deviceKey === null) await app.newKey();
    const config = readConfig();
    const gatewayKey = await edgeward.importGatewayKey(config.gatewayKey);  // fail before logging in
    const sessionId = await edgeward.confirmEmailCode(config.publicUrl, state.challengeId, code, state.deviceKey.publicKeyB64);
    state.client = new edgeward.EdgewardClient({
      grpcWebUrl: config.grpcWebUrl, gatewayKey, deviceKey: state.deviceKey, deviceSessionId: sessionId, mode: config.mode,
    });
    $("session").textContent = sessionId;
    log(`logged in: device session ${sessionId}`, "ok");
    return sessionId;
  },

  /** One signed command; a plain object describing its verified result or its error. */
  async execute(messageType = $("message-type").value.trim(), payloadText = $("payload").value, mode = undefined) {
    $("message-type").value = messageType;
    $("payload").value = payloadText;
    let outcome;
    try {
      JSON.parse(payloadText);  // the backend expects JSON: refuse a typo before signing it
      const c = await client();
      const result = await c.execute(messageType, new TextEncoder().encode(payloadText), { mode: mode ?? c.mode });
      outcome = { ok: true, resultCode: result.resultCode, requestId: result.requestId, timestampMs: result.timestampMs,
        replayed: result.replayed, payload: result.json() };
      log(`${messageType}: ${result.resultCode} (verified)`, "ok");
    } catch (err) {
      outcome = { ok: false, error: describe(err) };
      log(`${messageType}: ${JSON.stringify(outcome.error)}`, "error");
    }
    $("command-result").textContent = JSON.stringify(outcome, null, 2);
    return outcome;
  },

  /** Open a stream; its index in state.subscriptions. Events and the end are shown as they come. */
  async subscribe(mode = undefined) {
    const c = await client();
    const index = state.subscriptions.length;
    const list = $("events");
    const subscription = c.subscribe({
      mode: mode ?? c.mode,
      onEvent: (event) => {
        const item = document.createElement("li");
        item.textContent = `[stream ${index}] ${eventLine(event)}`;
        list.append(item);
      },
    });
    state.subscriptions.push(subscription);
    $("stream-state").textContent = `stream ${index} open (${subscription.mode})`;
    log(`stream ${index} opened (${subscription.mode})`);
    subscription.done.then(
      (status) => {
        const text = `stream ${index} ended: ${status.codeName} ${status.reason}`;
        $("stream-state").textContent = text;
        const item = document.createElement("li");
        item.className = status.code === 0 ? "" : "error";
        item.textContent = `[stream ${index}] ended: ${status.codeName} ${status.reason}`;
        list.append(item);
        log(text, status.code === 0 ? "" : "error");
      },
      (err) => {
        $("stream-state").textContent = `stream ${index} failed: ${err.message}`;
        log(`stream ${index} failed: ${err.message}`, "error");
      },
    );
    return index;
  },

  unsubscribe() {
    for (const subscription of state.subscriptions) subscription.cancel();
  },

  /** The first `count` events of stream `index` once they arrived, as plain objects. */
  async waitForEvents(index, count, timeoutMs = 30_000) {
    const events = await state.subscriptions[index].waitForEvents(count, timeoutMs);
    return events.map((e) => ({ eventId: e.eventId, eventType: e.eventType, timestampMs: e.timestampMs, traceId: e.traceId, payload: e.json() }));
  },

  /** How stream `index` ended: its status, or the error that cut it. */
  async streamEnd(index, timeoutMs = 30_000) {
    const subscription = state.subscriptions[index];
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`stream ${index} did not end within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const status = await Promise.race([subscription.done, timeout]);
      return { ok: true, code: status.code, codeName: status.codeName, reason: status.reason, metadata: status.metadata,
        trailersOnly: status.trailersOnly, events: subscription.events.length };
    } catch (err) {
      return { ok: false, error: describe(err) };
    } finally {
      clearTimeout(timer);
    }
  },
};

function button(id, action) {
  $(id).addEventListener("click", async () => {
    $(id).disabled = true;
    try {
      await action();
    } catch (err) {
      log(`${id}: ${JSON.stringify(describe(err))}`, "error");
    } finally {
      $(id).disabled = false;
    }
  });
}

applyQuery();
button("send-code", () => app.sendCode());
button("confirm", () => app.confirm());
button("execute", () => app.execute());
button("subscribe", () => app.subscribe());
button("unsubscribe", async () => app.unsubscribe());

window.edgeward = edgeward;
window.edgewardApp = app;
