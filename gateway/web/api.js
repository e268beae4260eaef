// bongsu web client: the HTTP/JSON API and the WebSocket push stream of the gateway that
// served this page (same origin). No UI in here; app.js renders.

const SESSION_KEY = "bongsu.session";
// Refresh the access token this long before it expires (less for very short-lived tokens).
const REFRESH_MARGIN_MS = 60_000;

/**
 * True when the session's access token should be refreshed before it is used. Expiry is kept
 * in this device's clock (`local_expires_ms`, from the server's `Date` header when the session
 * was issued), so a device whose clock is off does not refresh too late or on every call.
 */
function stale(s) {
  const expires = s.local_expires_ms || s.access_expires_at_ms;
  const life = Math.max(0, s.ttl_ms || expires - Date.now());
  const margin = Math.min(REFRESH_MARGIN_MS, life / 5);
  return Date.now() > expires - margin;
}

/** An error from the API (stable `code`) or from the network (`NETWORK`). */
export class ApiError extends Error {
  constructor(code, message, status = 0, retryAfterMs = 0) {
    super(message || code);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/** `bytes` random bytes as lowercase hex (ids are 16 bytes: 32 hex digits). */
export function randomHex(bytes = 16) {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Codes worth another try of an idempotent request. */
function transient(e) {
  return (
    e instanceof ApiError &&
    (e.code === "NETWORK" ||
      e.code === "UNAVAILABLE" ||
      e.code === "NOT_LEADER" ||
      e.code === "RESOURCE_EXHAUSTED")
  );
}

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    return s && s.access_token && s.refresh_token && s.user_id ? s : null;
  } catch {
    return null;
  }
}

export class Api {
  constructor(base = location.origin) {
    this.base = base;
    this.session = loadSession();
    this.refreshing = null;
    /** Called with no argument when the session ends (signed out or refresh refused). */
    this.onSignedOut = () => {};
  }

  saveSession(s) {
    if (s && !s.local_expires_ms) {
      const serverNow = this.serverDateMs && Math.abs(Date.now() - this.serverDateSeenAt) < 5000 ? this.serverDateMs : Date.now();
      const ttl = Math.max(0, s.access_expires_at_ms - serverNow);
      s = { ...s, ttl_ms: ttl, local_expires_ms: Date.now() + ttl };
    }
    this.session = s;
    if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
    else localStorage.removeItem(SESSION_KEY);
  }

  /** One HTTP exchange; throws ApiError. */
  async raw(method, path, body, token) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers.authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError("NETWORK", "cannot reach the server", 0);
    }
    const date = Date.parse(resp.headers.get("date") || "");
    if (Number.isFinite(date)) {
      this.serverDateMs = date;
      this.serverDateSeenAt = Date.now();
    }
    const text = await resp.text().catch(() => "");
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) {
      const err = (data && data.error) || {};
      const retry = Number(resp.headers.get("retry-after"));
      throw new ApiError(
        err.code || (resp.status === 401 ? "UNAUTHENTICATED" : resp.status >= 500 ? "UNAVAILABLE" : "HTTP_" + resp.status),
        err.message || `${resp.status} ${resp.statusText}`,
        resp.status,
        Number.isFinite(retry) && retry > 0 ? retry * 1000 : 0,
      );
    }
    return data;
  }

  /**
   * An authenticated call: refreshes the access token when it is about to expire and once
   * on a 401. `retries` > 0 retries transient failures (only for idempotent calls).
   */
  async call(method, path, body, { retries = 0 } = {}) {
    let attempt = 0;
    for (;;) {
      try {
        return await this.authed(method, path, body);
      } catch (e) {
        if (!transient(e) || attempt >= retries) throw e;
        attempt += 1;
        const backoff = Math.min(4000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
        await sleep(Math.max(backoff, Math.min(e.retryAfterMs, 10_000)));
      }
    }
  }

  async authed(method, path, body) {
    if (!this.session) throw new ApiError("UNAUTHENTICATED", "signed out", 401);
    if (stale(this.session)) await this.refresh();
    try {
      return await this.raw(method, path, body, this.session.access_token);
    } catch (e) {
      if (e.status !== 401 || !this.session) throw e;
      await this.refresh();
      return await this.raw(method, path, body, this.session.access_token);
    }
  }

  /** A valid access token (refreshed first if needed), for the WebSocket. */
  async accessToken() {
    if (!this.session) throw new ApiError("UNAUTHENTICATED", "signed out", 401);
    if (stale(this.session)) await this.refresh();
    return this.session.access_token;
  }

  /** Refresh tokens are single-use: one refresh at a time, shared by every caller. */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.doRefresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async doRefresh() {
    const used = this.session && this.session.refresh_token;
    if (!used) throw new ApiError("UNAUTHENTICATED", "signed out", 401);
    // Another tab may have refreshed already: its new tokens are in localStorage.
    const stored = loadSession();
    if (stored && stored.refresh_token !== used && stored.user_id === this.session.user_id) {
      this.session = stored;
      if (!stale(stored)) return;
    }
    let attempt = 0;
    for (;;) {
      try {
        const s = await this.raw("POST", "/v1/auth/refresh", {
          refresh_token: this.session.refresh_token,
        });
        this.saveSession(s);
        return;
      } catch (e) {
        if (transient(e) && attempt < 4) {
          attempt += 1;
          await sleep(Math.max(300 * 2 ** attempt, Math.min(e.retryAfterMs, 10_000)));
          continue;
        }
        if (e.status === 401 || e.code === "UNAUTHENTICATED") {
          const again = loadSession();
          if (again && again.refresh_token !== this.session.refresh_token) {
            this.session = again; // another tab won the race
            return;
          }
          this.saveSession(null);
          this.onSignedOut();
        }
        throw e;
      }
    }
  }

  // ---- auth ----

  deviceName() {
    const ua = navigator.userAgent;
    const browser = /Edg\//.test(ua)
      ? "Edge"
      : /Firefox\//.test(ua)
        ? "Firefox"
        : /Chrom(e|ium)\//.test(ua)
          ? "Chromium"
          : /Safari\//.test(ua)
            ? "Safari"
            : "Browser";
    const os = /Android/.test(ua)
      ? "Android"
      : /iPhone|iPad/.test(ua)
        ? "iOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Mac OS X/.test(ua)
            ? "macOS"
            : /CrOS/.test(ua)
              ? "ChromeOS"
              : /Linux/.test(ua)
                ? "Linux"
                : "";
    return (os ? `${browser} on ${os}` : `${browser} on the web`).slice(0, 64);
  }

  async signUp(handle, password) {
    const s = await this.raw("POST", "/v1/auth/signup", {
      handle,
      password,
      device: { kind: "web", name: this.deviceName() },
    });
    this.saveSession(s);
    return s;
  }

  async signIn(handle, password) {
    const s = await this.raw("POST", "/v1/auth/signin", {
      handle,
      password,
      device: { kind: "web", name: this.deviceName() },
    });
    this.saveSession(s);
    return s;
  }

  signOut() {
    this.saveSession(null);
  }

  // ---- everything else ----

  info() {
    return this.raw("GET", "/v1/info");
  }

  devices() {
    return this.call("GET", "/v1/devices", undefined, { retries: 2 });
  }

  revokeDevice(id) {
    return this.call("DELETE", `/v1/devices/${encodeURIComponent(id)}`, undefined, { retries: 2 });
  }

  lookup(handles) {
    return this.call("POST", "/v1/users/lookup", { handles }, { retries: 2 });
  }

  /** `convId` is chosen by the caller, so retrying a create is safe. */
  async createConversation(convId, kind, members) {
    try {
      return await this.call("POST", "/v1/conversations", { conv_id: convId, kind, members }, { retries: 3 });
    } catch (e) {
      // A retry after a create that did happen (its reply was lost): fetch what was created.
      if (e.code === "CONVERSATION_EXISTS") return this.conversation(convId);
      throw e;
    }
  }

  conversation(convId) {
    return this.call("GET", `/v1/conversations/${convId}`, undefined, { retries: 2 });
  }

  conversations() {
    return this.call("GET", "/v1/conversations", undefined, { retries: 2 });
  }

  /** Idempotent by `clientMsgId`: retried with the same id. */
  send(convId, clientMsgId, text) {
    return this.call(
      "POST",
      `/v1/conversations/${convId}/messages`,
      { client_msg_id: clientMsgId, kind: "text", text },
      { retries: 4 },
    );
  }

  messagesAfter(convId, after, limit = 100) {
    return this.call("GET", `/v1/conversations/${convId}/messages?after=${after}&limit=${limit}`, undefined, {
      retries: 2,
    });
  }

  messagesBefore(convId, before, limit = 50) {
    return this.call("GET", `/v1/conversations/${convId}/messages?before=${before}&limit=${limit}`, undefined, {
      retries: 2,
    });
  }

  markRead(convId, seq) {
    return this.call("POST", `/v1/conversations/${convId}/read`, { seq }, { retries: 2 });
  }
}

/**
 * The push stream: subscribes with the last seq seen per conversation, and reconnects with
 * backoff when the connection drops (resuming from the same cursors, so nothing is missed or
 * doubled). `onEvent(frame)` gets every server frame; `onState(state)` gets "connecting",
 * "live" or "offline".
 */
export class Push {
  constructor(api, { cursors, onEvent, onState }) {
    this.api = api;
    this.cursors = cursors; // () => {conv_id: seq}
    this.onEvent = onEvent;
    this.onState = onState;
    this.ws = null;
    this.stopped = true;
    this.failures = 0;
    this.timer = null;
    this.watchdog = null;
    this.lastFrameAt = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
  }

  /** Drops the connection and opens a new one at once (e.g. new cursors). */
  restart() {
    if (this.stopped) return;
    this.stop();
    this.stopped = false;
    this.failures = 0;
    this.connect();
  }

  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/v1/ws`;
  }

  async connect() {
    if (this.stopped) return;
    this.onState("connecting");
    let token;
    try {
      token = await this.api.accessToken();
    } catch (e) {
      if (e.code === "UNAUTHENTICATED") return; // signed out: app.js shows the sign-in page
      this.retryLater();
      return;
    }
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.retryLater();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      ws.send(JSON.stringify({ type: "subscribe", token, cursors: this.cursors() }));
    };
    ws.onmessage = (ev) => {
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame.type === "ready") {
        this.failures = 0;
        this.onState("live");
      } else if (frame.type === "error") {
        if (frame.code === "UNAUTHENTICATED") {
          // Expired between refresh and subscribe, or revoked: refresh decides which.
          this.api.refresh().catch(() => {});
        }
      }
      this.onEvent(frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.retryLater();
    };
    ws.onerror = () => {
      /* onclose follows */
    };
    // Heartbeats come every 15 s on an idle stream; a silent minute means a dead connection.
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (this.ws === ws && Date.now() - this.lastFrameAt > 45_000) {
        this.ws = null;
        ws.onclose = ws.onmessage = ws.onerror = null;
        try {
          ws.close();
        } catch {
          /* ignore */
        }
        this.retryLater();
      }
    }, 5000);
  }

  retryLater() {
    if (this.stopped) return;
    clearInterval(this.watchdog);
    this.onState("offline");
    this.failures += 1;
    const delay = Math.min(15_000, 300 * 2 ** Math.min(this.failures, 6)) * (0.5 + Math.random() / 2);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
