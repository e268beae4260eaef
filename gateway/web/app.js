// bongsu web client: sign up / sign in, conversation list, live conversation view.
// Talks only to the gateway that served the page (see api.js).

import { Api, ApiError, Push, randomHex } from "./api.js";

const $ = (id) => document.getElementById(id);
const api = new Api();

const LAST_HANDLE_KEY = "bongsu.lastHandle";
const PAGE = 50;

const state = {
  me: null, // {user_id, handle, device_id}
  /** conv_id -> {conv_id, kind, last_seq, read_seq, unread, last_message, members, activity_ms} */
  convs: new Map(),
  /** conv_id -> Map(seq -> message) */
  msgs: new Map(),
  /** conv_id -> [{client_msg_id, text, status: "sending"|"failed", error, at_ms}] */
  pending: new Map(),
  /** conv_ids whose newest page has been loaded */
  loaded: new Set(),
  open: null,
  push: null,
  pollTimer: null,
  live: "offline",
};

// ---------------------------------------------------------------- small helpers

/** Creates an element: h("p", {class: "x", dataset: {seq: 1}}, "text", child). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const FRIENDLY = {
  HANDLE_TAKEN: "That handle is taken. Try another one.",
  UNKNOWN_USER: "There is no one with that handle.",
  NOT_MEMBER: "You are not a member of this conversation.",
  UNKNOWN_CONVERSATION: "That conversation does not exist.",
  RESOURCE_EXHAUSTED: "Too many requests. Wait a moment and try again.",
  UNAVAILABLE: "The service is busy right now. Please try again.",
  NOT_LEADER: "The service is busy right now. Please try again.",
  NETWORK: "Cannot reach the server. Check your connection.",
  MESSAGE_TOO_LARGE: "That message is too long.",
  TOO_MANY_MEMBERS: "That is more people than a group can hold.",
  DIRECT_IMMUTABLE: "People cannot be added to a one-to-one chat.",
};

/** Readable text for an error; `context` picks a better wording for a few codes. */
function describe(e, context = "") {
  if (!(e instanceof ApiError)) return "Something went wrong. Please try again.";
  if (e.code === "UNAUTHENTICATED" && context === "signin") return "Wrong handle or password.";
  if (e.code === "UNAUTHENTICATED") return "Your session ended. Please sign in again.";
  if (FRIENDLY[e.code]) {
    const wait = e.code === "RESOURCE_EXHAUSTED" && e.retryAfterMs ? ` (about ${Math.ceil(e.retryAfterMs / 1000)} s)` : "";
    return FRIENDLY[e.code] + wait;
  }
  // Validation errors: the server's message names the field and the rule.
  let m = (e.message || e.code).replace(/^[A-Z_]+:\s*/, "");
  m = m.charAt(0).toUpperCase() + m.slice(1);
  return /[.!?]$/.test(m) ? m : m + ".";
}

function showError(id, text) {
  const el = $(id);
  el.textContent = text || "";
  el.hidden = !text;
}

const AVATAR_HUES = [206, 168, 32, 262, 340, 190, 12, 142];
function avatar(name, cls = "avatar") {
  let x = 0;
  for (const ch of name) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  const el = h("span", { class: cls, "aria-hidden": "true" }, (name || "?").replace(/^[@._]+/, "").slice(0, 1).toUpperCase() || "?");
  el.style.setProperty("--hue", AVATAR_HUES[x % AVATAR_HUES.length]);
  return el;
}

function timeLabel(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  const sameYear = d.getFullYear() === now.getFullYear();
  return d.toLocaleDateString([], sameYear ? { month: "short", day: "numeric" } : { year: "numeric", month: "short", day: "numeric" });
}

function dayLabel(ms) {
  const d = new Date(ms);
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (d.toDateString() === now.toDateString()) return "Today";
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

function handleOf(conv, userId) {
  const m = (conv.members || []).find((x) => x.user_id === userId);
  return m ? m.handle : null;
}

function others(conv) {
  return (conv.members || []).filter((m) => m.user_id !== state.me.user_id);
}

function convTitle(conv) {
  const o = others(conv).map((m) => m.handle);
  if (!o.length) return conv.kind === "group" ? "Group" : "Conversation";
  if (o.length <= 3) return o.join(", ");
  return `${o.slice(0, 3).join(", ")} +${o.length - 3}`;
}

function preview(conv) {
  const m = conv.last_message;
  if (!m) return conv.kind === "group" ? "New group" : "No messages yet";
  const body = m.kind === "text" || m.text !== undefined ? m.text || "" : `[${m.kind}]`;
  if (m.sender === state.me.user_id) return `You: ${body}`;
  if (conv.kind === "group") {
    const who = handleOf(conv, m.sender);
    if (who) return `${who}: ${body}`;
  }
  return body;
}

function isVisible() {
  return document.visibilityState === "visible";
}

// ---------------------------------------------------------------- served by

async function loadInfo() {
  const el = document.querySelector('[data-testid="served-by"]');
  for (let attempt = 0; ; attempt++) {
    try {
      const info = await api.info();
      el.textContent = "";
      el.append(h("span", { class: "dc-dot", "aria-hidden": "true" }), "served by ", h("strong", {}, info.gateway_id), " in ", h("strong", {}, info.dc));
      el.title = `Gateway ${info.gateway_id} in datacenter ${info.dc}, bongsu ${info.version}. Any datacenter can serve you.`;
      el.dataset.dc = info.dc;
      el.dataset.gateway = info.gateway_id;
      return;
    } catch {
      el.textContent = "server unreachable, retrying…";
      await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** attempt)));
    }
  }
}

// ---------------------------------------------------------------- auth view

function selectTab(which) {
  const signup = which === "signup";
  $("tab-signup").setAttribute("aria-selected", String(signup));
  $("tab-signin").setAttribute("aria-selected", String(!signup));
  $("signup-form").hidden = !signup;
  $("signin-form").hidden = signup;
  showError("signup-error", "");
  showError("signin-error", "");
}

function showAuth() {
  $("chat-view").hidden = true;
  $("account").hidden = true;
  $("auth-view").hidden = false;
  const last = localStorage.getItem(LAST_HANDLE_KEY);
  if (last) {
    $("signin-handle").value = last;
    selectTab("signin");
  } else {
    selectTab("signup");
  }
  document.title = "bongsu";
}

async function submitAuth(kind, form) {
  const handle = form.elements.handle.value.trim().toLowerCase().replace(/^@/, "");
  const password = form.elements.password.value;
  const errId = `${kind}-error`;
  if (!handle || !password) {
    showError(errId, "Enter a handle and a password.");
    return;
  }
  if (kind === "signup" && new TextEncoder().encode(password).length < 8) {
    showError(errId, "Choose a password of at least 8 characters.");
    return;
  }
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  showError(errId, "");
  try {
    const s = kind === "signup" ? await api.signUp(handle, password) : await api.signIn(handle, password);
    localStorage.setItem(LAST_HANDLE_KEY, s.handle);
    form.reset();
    startChat();
  } catch (e) {
    showError(errId, describe(e, kind));
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- chat view

function startChat() {
  const s = api.session;
  state.me = { user_id: s.user_id, handle: s.handle, device_id: s.device_id };
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("account").hidden = false;
  $("me-handle").textContent = "@" + s.handle;
  renderList();
  renderConversation();
  refreshList();
  state.push = new Push(api, {
    cursors: () => {
      const c = {};
      for (const conv of state.convs.values()) {
        // After the server refused our cursors, name only conversations it has confirmed.
        if (state.confirmedOnly && !conv.confirmed) continue;
        c[conv.conv_id] = conv.last_seq || 0;
      }
      return c;
    },
    onEvent,
    onState: setLive,
  });
  state.push.start();
  schedulePoll();
}

function stopChat() {
  if (state.push) state.push.stop();
  state.push = null;
  clearTimeout(state.pollTimer);
  state.convs.clear();
  state.msgs.clear();
  state.pending.clear();
  state.loaded.clear();
  state.open = null;
  state.me = null;
  $("conv-list").textContent = "";
  $("message-list").textContent = "";
}

function setLive(s) {
  state.live = s;
  const el = $("live-status");
  el.dataset.state = s;
  el.querySelector(".status-text").textContent = s === "live" ? "live" : s === "connecting" ? "connecting…" : "reconnecting…";
  // After a reconnect the push stream resumes from our cursors; the list catches up the rest.
  if (s === "live") refreshList();
  schedulePoll();
}

/** The list is also polled (slowly while push is live): eventual consistency, belt and braces. */
function schedulePoll() {
  clearTimeout(state.pollTimer);
  if (!state.me) return;
  state.pollTimer = setTimeout(
    async () => {
      await refreshList();
      schedulePoll();
    },
    state.live === "live" ? 15_000 : 4_000,
  );
}

function activityOf(conv) {
  return Math.max(conv.activity_ms || 0, (conv.last_message && conv.last_message.sent_at_ms) || 0, conv.created_at_ms || 0);
}

/** Merges a summary from the server into what we know (never moving a cursor backwards). */
function mergeSummary(s, { confirmed = false, fresh = false } = {}) {
  const cur = state.convs.get(s.conv_id);
  if (!cur) {
    state.convs.set(s.conv_id, {
      conv_id: s.conv_id,
      kind: s.kind || "direct",
      last_seq: s.last_seq || 0,
      read_seq: s.read_seq || 0,
      unread: s.unread || 0,
      last_message: s.last_message || null,
      members: s.members || [],
      created_at_ms: s.created_at_ms || 0,
      // Sorts the list: the newest message, else when we learnt of it (a just-joined chat is news).
      activity_ms: (s.last_message && s.last_message.sent_at_ms) || s.created_at_ms || (fresh ? Date.now() : 0),
      confirmed,
    });
    return;
  }
  if (confirmed) cur.confirmed = true;
  if (s.kind) cur.kind = s.kind;
  if (s.members && s.members.length) cur.members = s.members;
  cur.read_seq = Math.max(cur.read_seq || 0, s.read_seq || 0);
  if ((s.last_seq || 0) >= (cur.last_seq || 0)) {
    cur.last_seq = s.last_seq || 0;
    if (s.last_message) cur.last_message = s.last_message;
    if (typeof s.unread === "number") cur.unread = s.unread;
  }
  if (cur.read_seq >= cur.last_seq) cur.unread = 0;
}

let listInFlight = null;
function refreshList() {
  if (!state.me) return Promise.resolve();
  if (listInFlight) return listInFlight;
  listInFlight = (async () => {
    try {
      const r = await api.conversations();
      for (const s of r.conversations || []) mergeSummary(s, { confirmed: true });
      renderList();
      if (state.open) {
        renderHeader();
        catchUpOpen();
        maybeMarkRead();
      }
    } catch (e) {
      if (e.code === "UNAUTHENTICATED" && !api.session) signedOut();
    } finally {
      listInFlight = null;
    }
  })();
  return listInFlight;
}

function renderList() {
  const list = $("conv-list");
  const convs = [...state.convs.values()].sort((a, b) => activityOf(b) - activityOf(a));
  $("conv-empty").hidden = convs.length > 0;
  // Keyboard focus survives the re-render.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.convId : null;
  list.textContent = "";
  let totalUnread = 0;
  for (const c of convs) {
    const open = c.conv_id === state.open;
    const unread = open && isVisible() ? 0 : c.unread || 0;
    totalUnread += unread;
    const title = convTitle(c);
    const last = c.last_message;
    const item = h(
      "button",
      {
        type: "button",
        class: "conv-item" + (open ? " active" : "") + (unread ? " has-unread" : ""),
        "data-testid": "conversation-item",
        dataset: { convId: c.conv_id, kind: c.kind },
        "aria-current": open ? "true" : undefined,
        "aria-label": `${title}${unread ? `, ${unread} unread` : ""}`,
        onclick: () => openConversation(c.conv_id),
      },
      c.kind === "group" ? avatar(title, "avatar group") : avatar(title),
      h(
        "span",
        { class: "conv-main" },
        h("span", { class: "conv-name", "data-testid": "conversation-name" }, title),
        h("span", { class: "conv-preview", "data-testid": "conversation-preview" }, preview(c)),
      ),
      h(
        "span",
        { class: "conv-meta" },
        h("time", { class: "conv-time" }, last ? timeLabel(last.sent_at_ms) : ""),
        unread ? h("span", { class: "badge", "data-testid": "unread-badge" }, unread > 99 ? "99+" : String(unread)) : null,
      ),
    );
    list.append(h("li", {}, item));
    if (c.conv_id === focused) item.focus();
  }
  document.title = totalUnread ? `(${totalUnread}) bongsu` : "bongsu";
}

// ---------------------------------------------------------------- push events

function onEvent(f) {
  switch (f.type) {
    case "message":
      if (f.message) ingest(f.message);
      break;
    case "joined":
      if (f.conversation) {
        mergeSummary(f.conversation, { confirmed: true, fresh: true });
        renderList();
      }
      break;
    case "left":
      if (f.conv_id) {
        state.convs.delete(f.conv_id);
        state.msgs.delete(f.conv_id);
        state.loaded.delete(f.conv_id);
        if (state.open === f.conv_id) state.open = null;
        renderList();
        renderConversation();
      }
      break;
    case "read":
      onRead(f.conv_id, f.read_seq);
      break;
    case "error":
      if (f.code === "UNAUTHENTICATED" && !api.session) signedOut();
      if (f.code === "NOT_MEMBER" || f.code === "UNKNOWN_CONVERSATION" || f.code === "INVALID_ARGUMENT") {
        // A cursor names a conversation we are no longer in: resubscribe with the server's list.
        state.confirmedOnly = true;
        refreshList();
      }
      break;
    default:
      break; // ready, heartbeat
  }
}

function msgMap(convId) {
  let m = state.msgs.get(convId);
  if (!m) state.msgs.set(convId, (m = new Map()));
  return m;
}

/** One message from push, a send reply or history: deduplicated by seq. */
function ingest(msg, { render = true } = {}) {
  const id = msg.conv_id;
  let conv = state.convs.get(id);
  if (!conv) {
    // Pushed before the conversation reached our list: learn its members from the list soon.
    mergeSummary({ conv_id: id, last_seq: 0, read_seq: 0, unread: 0, members: [] });
    conv = state.convs.get(id);
    setTimeout(refreshList, 300);
  }
  const map = msgMap(id);
  const known = map.has(msg.seq);
  map.set(msg.seq, msg);
  const pend = state.pending.get(id);
  if (pend && msg.client_msg_id) {
    const i = pend.findIndex((p) => p.client_msg_id === msg.client_msg_id);
    if (i >= 0) pend.splice(i, 1);
  }
  const mine = msg.sender === state.me.user_id;
  if (msg.seq > (conv.last_seq || 0)) {
    if (!known && !mine && msg.seq > (conv.read_seq || 0)) conv.unread = (conv.unread || 0) + 1;
    conv.last_seq = msg.seq;
    conv.last_message = msg;
    conv.activity_ms = Math.max(conv.activity_ms || 0, msg.sent_at_ms || Date.now());
  } else if (conv.last_message && conv.last_message.seq === msg.seq) {
    conv.last_message = msg;
  }
  if (mine && msg.seq > (conv.read_seq || 0) && msg.seq === conv.last_seq) {
    // Our own newest message: nothing before it is unread from where we stand.
    conv.read_seq = msg.seq;
    conv.unread = 0;
  }
  if (render) {
    renderList();
    if (state.open === id) {
      renderMessages();
      catchUpOpen();
      maybeMarkRead();
    }
  }
}

function onRead(convId, readSeq) {
  const conv = state.convs.get(convId);
  if (!conv || !readSeq) return;
  if (readSeq <= (conv.read_seq || 0)) return;
  conv.read_seq = readSeq;
  if (readSeq >= conv.last_seq) {
    conv.unread = 0;
  } else {
    const map = state.msgs.get(convId);
    let complete = !!map;
    let n = 0;
    for (let s = readSeq + 1; complete && s <= conv.last_seq; s++) {
      const m = map.get(s);
      if (!m) complete = false;
      else if (m.sender !== state.me.user_id) n++;
    }
    if (complete) conv.unread = n;
    else setTimeout(refreshList, 200);
  }
  renderList();
}

// ---------------------------------------------------------------- conversation view

async function openConversation(convId) {
  state.open = convId;
  showError("composer-error", "");
  document.body.classList.add("conv-open");
  renderList();
  renderConversation();
  $("composer-input").focus();
  if (!state.loaded.has(convId)) await loadLatest(convId);
  maybeMarkRead();
}

function closeConversation() {
  state.open = null;
  document.body.classList.remove("conv-open");
  renderList();
  renderConversation();
}

async function loadLatest(convId) {
  const conv = state.convs.get(convId);
  try {
    const r = await api.messagesBefore(convId, (conv ? conv.last_seq : 0) + 1, PAGE);
    for (const m of r.messages || []) ingest(m, { render: false });
    if (conv && (r.last_seq || 0) > conv.last_seq) conv.last_seq = r.last_seq;
    state.loaded.add(convId);
  } catch (e) {
    if (state.open === convId) showError("composer-error", describe(e));
  }
  if (state.open === convId) {
    renderMessages(true);
    catchUpOpen();
  }
  renderList();
}

async function loadOlder() {
  const convId = state.open;
  const map = state.msgs.get(convId);
  if (!convId || !map || !map.size) return;
  const oldest = Math.min(...map.keys());
  const box = $("messages");
  const before = box.scrollHeight - box.scrollTop;
  try {
    const r = await api.messagesBefore(convId, oldest, PAGE);
    for (const m of r.messages || []) ingest(m, { render: false });
    if (!(r.messages || []).length) state.msgs.get(convId).set(0, null); // marks "no more"
  } catch (e) {
    showError("composer-error", describe(e));
  }
  if (state.open === convId) {
    renderMessages();
    box.scrollTop = box.scrollHeight - before; // keep the reader's place
  }
}

let catchingUp = false;
/** Fills a gap between what the open view holds and the conversation's last seq. */
async function catchUpOpen() {
  const convId = state.open;
  if (!convId || catchingUp || !state.loaded.has(convId)) return;
  const conv = state.convs.get(convId);
  const map = msgMap(convId);
  // The highest seq from which everything below (down to the oldest loaded) is present.
  const seqs = [...map.keys()].filter((s) => s > 0).sort((a, b) => a - b);
  let upto = seqs.length ? seqs[0] - 1 : 0;
  for (const s of seqs) {
    if (s === upto + 1) upto = s;
    else break;
  }
  if (upto >= conv.last_seq) return;
  catchingUp = true;
  try {
    let after = upto;
    for (let round = 0; round < 20 && after < conv.last_seq; round++) {
      const r = await api.messagesAfter(convId, after, 100);
      const ms = r.messages || [];
      for (const m of ms) ingest(m, { render: false });
      if (!ms.length) break;
      after = ms[ms.length - 1].seq;
    }
  } catch {
    /* the next poll or push tries again */
  } finally {
    catchingUp = false;
  }
  if (state.open === convId) {
    renderMessages();
    maybeMarkRead();
  }
  renderList();
}

let readTimer = null;
/** Marks the open conversation read when it is on screen, so other devices clear their badge. */
function maybeMarkRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const convId = state.open;
    if (!convId || !isVisible() || !state.loaded.has(convId)) return;
    const conv = state.convs.get(convId);
    const map = state.msgs.get(convId);
    if (!conv || !map) return;
    const seen = Math.max(0, ...[...map.keys()]);
    if (seen <= (conv.read_seq || 0) && !conv.unread) return;
    const seq = Math.max(seen, conv.read_seq || 0);
    conv.read_seq = seq;
    conv.unread = 0;
    renderList();
    try {
      const r = await api.markRead(convId, seq);
      if (r && r.read_seq > conv.read_seq) conv.read_seq = r.read_seq;
    } catch {
      /* retried on the next message or visibility change */
    }
  }, 150);
}

function renderHeader() {
  const conv = state.convs.get(state.open);
  if (!conv) return;
  const title = convTitle(conv);
  $("conv-title").textContent = title;
  const n = (conv.members || []).length;
  $("conv-sub").textContent =
    conv.kind === "group" ? `Group · ${n} member${n === 1 ? "" : "s"}` : others(conv).length ? `@${others(conv)[0].handle}` : "";
  const av = $("conv-avatar");
  const fresh = avatar(title, conv.kind === "group" ? "avatar group" : "avatar");
  fresh.id = "conv-avatar";
  av.replaceWith(fresh);
}

function renderConversation() {
  const open = !!state.open && state.convs.has(state.open);
  $("conv-placeholder").hidden = open;
  $("conv-header").hidden = !open;
  $("messages").hidden = !open;
  $("composer").hidden = !open;
  if (!open) {
    document.body.classList.remove("conv-open");
    $("message-list").textContent = "";
    return;
  }
  renderHeader();
  renderMessages(true);
}

function renderMessages(forceBottom = false) {
  const convId = state.open;
  const conv = state.convs.get(convId);
  if (!conv) return;
  const box = $("messages");
  const atBottom = forceBottom || box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const list = $("message-list");
  const map = state.msgs.get(convId) || new Map();
  const seqs = [...map.keys()].filter((s) => s > 0).sort((a, b) => a - b);
  $("load-older").hidden = !(state.loaded.has(convId) && seqs.length && seqs[0] > 1 && !map.has(0));
  list.textContent = "";
  let prevSender = null;
  let prevDay = null;
  const group = conv.kind === "group";
  const rows = seqs.map((s) => map.get(s));
  for (const p of state.pending.get(convId) || []) {
    rows.push({ pending: p, sender: state.me.user_id, text: p.text, sent_at_ms: p.at_ms, kind: "text" });
  }
  if (!rows.length && state.loaded.has(convId)) {
    list.append(h("li", { class: "empty-conv" }, "No messages yet. Say hello 👋"));
  }
  for (const m of rows) {
    const day = new Date(m.sent_at_ms || Date.now()).toDateString();
    if (day !== prevDay) {
      list.append(h("li", { class: "day", role: "separator" }, dayLabel(m.sent_at_ms || Date.now())));
      prevDay = day;
      prevSender = null;
    }
    const mine = m.sender === state.me.user_id;
    const first = m.sender !== prevSender;
    prevSender = m.sender;
    const text = m.kind === "text" || m.text !== undefined ? m.text || "" : `[${m.kind} message]`;
    const who = mine ? "You" : handleOf(conv, m.sender) || "someone";
    const bubble = h(
      "div",
      { class: "bubble" },
      group && !mine && first ? h("span", { class: "sender", "data-testid": "message-sender" }, who) : null,
      h("p", { class: "text", "data-testid": "message-text" }, text),
      h(
        "span",
        { class: "meta" },
        m.pending
          ? m.pending.status === "failed"
            ? h("span", { class: "failed" }, "not sent ")
            : h("span", { class: "sending" }, "sending…")
          : h("time", { datetime: new Date(m.sent_at_ms || 0).toISOString() }, timeLabel(m.sent_at_ms)),
      ),
    );
    const li = h(
      "li",
      {
        class: "msg" + (mine ? " own" : " theirs") + (first ? " first" : "") + (m.pending ? " pending" : ""),
        "data-testid": "message",
        dataset: m.pending ? { pending: m.pending.status } : { seq: m.seq, sender: m.sender },
        "aria-label": `${who}: ${text}`,
      },
      !mine && first ? avatar(who, "avatar small") : h("span", { class: "avatar-spacer", "aria-hidden": "true" }),
      bubble,
    );
    if (m.pending && m.pending.status === "failed") {
      bubble.append(
        h(
          "button",
          { type: "button", class: "retry", "data-testid": "message-retry", onclick: () => retrySend(convId, m.pending) },
          "Retry",
        ),
      );
    }
    list.append(li);
  }
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// ---------------------------------------------------------------- sending

async function deliver(convId, p) {
  p.status = "sending";
  renderIfOpen(convId);
  try {
    const r = await api.send(convId, p.client_msg_id, p.text);
    const map = msgMap(convId);
    if (!map.has(r.seq)) {
      ingest(
        {
          conv_id: convId,
          seq: r.seq,
          sender: state.me.user_id,
          device: state.me.device_id,
          client_msg_id: p.client_msg_id,
          kind: "text",
          text: p.text,
          sent_at_ms: p.at_ms,
        },
        { render: false },
      );
    }
    const pend = state.pending.get(convId) || [];
    const i = pend.indexOf(p);
    if (i >= 0) pend.splice(i, 1);
    showError("composer-error", "");
  } catch (e) {
    p.status = "failed";
    if (state.open === convId) showError("composer-error", describe(e));
  }
  renderList();
  renderIfOpen(convId);
  if (state.open === convId) catchUpOpen();
}

function renderIfOpen(convId) {
  if (state.open === convId) renderMessages(true);
}

function send() {
  const input = $("composer-input");
  const text = input.value.trim();
  const convId = state.open;
  if (!text || !convId) return;
  input.value = "";
  autoGrow();
  const p = { client_msg_id: randomHex(16), text, status: "sending", at_ms: Date.now() };
  if (!state.pending.has(convId)) state.pending.set(convId, []);
  state.pending.get(convId).push(p);
  const conv = state.convs.get(convId);
  if (conv) conv.activity_ms = p.at_ms;
  deliver(convId, p);
}

/** The same client message id again: a retry can never post twice. */
function retrySend(convId, p) {
  deliver(convId, p);
}

function autoGrow() {
  const t = $("composer-input");
  t.style.height = "auto";
  t.style.height = Math.min(t.scrollHeight + 2, 160) + "px";
  t.style.overflowY = t.scrollHeight > 160 ? "auto" : "hidden";
}

// ---------------------------------------------------------------- new chat

async function newChat(ev) {
  ev.preventDefault();
  const input = $("new-chat-handle");
  const button = ev.target.querySelector('button[type="submit"]');
  const wanted = [
    ...new Set(
      input.value
        .split(/[\s,;]+/)
        .map((x) => x.trim().toLowerCase().replace(/^@/, ""))
        .filter(Boolean),
    ),
  ].filter((x) => x !== state.me.handle);
  if (!wanted.length) {
    showError("new-chat-error", input.value.trim() ? "That is you. Enter someone else’s handle." : "Enter a handle.");
    return;
  }
  showError("new-chat-error", "");
  button.disabled = true;
  try {
    const r = await api.lookup(wanted);
    const found = new Map((r.users || []).map((u) => [u.handle, u]));
    const missing = wanted.filter((x) => !found.has(x));
    if (missing.length) {
      showError("new-chat-error", `No one is called ${missing.map((x) => "@" + x).join(", ")}.`);
      return;
    }
    const ids = wanted.map((x) => found.get(x).user_id);
    const kind = ids.length === 1 ? "direct" : "group";
    if (kind === "direct") {
      const existing = [...state.convs.values()].find(
        (c) => c.kind === "direct" && others(c).length === 1 && others(c)[0].user_id === ids[0],
      );
      if (existing) {
        input.value = "";
        openConversation(existing.conv_id);
        return;
      }
    }
    const conv = await api.createConversation(randomHex(16), kind, ids);
    mergeSummary({ ...conv, read_seq: 0, unread: 0, last_message: null });
    const c = state.convs.get(conv.conv_id);
    c.activity_ms = Date.now();
    state.loaded.add(conv.conv_id);
    input.value = "";
    openConversation(conv.conv_id);
  } catch (e) {
    showError("new-chat-error", describe(e));
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- devices

async function openDevices() {
  const dlg = $("devices-dialog");
  showError("devices-error", "");
  if (!dlg.open) dlg.showModal();
  const list = $("device-list");
  list.textContent = "";
  list.append(h("li", { class: "hint" }, "Loading…"));
  try {
    const r = await api.devices();
    list.textContent = "";
    const devices = (r.devices || []).filter((d) => !d.revoked);
    for (const d of devices) {
      const current = d.current || d.device_id === state.me.device_id;
      list.append(
        h(
          "li",
          { class: "device", "data-testid": "device" },
          h(
            "span",
            { class: "device-main" },
            h("strong", {}, d.name || "Unnamed device"),
            h("span", { class: "hint" }, `${d.kind || "device"} · since ${timeLabel(d.created_at_ms)}${current ? " · this device" : ""}`),
          ),
          current
            ? null
            : h(
                "button",
                {
                  type: "button",
                  class: "ghost danger",
                  "data-testid": "device-revoke",
                  onclick: async (e) => {
                    e.target.disabled = true;
                    try {
                      await api.revokeDevice(d.device_id);
                      openDevices();
                    } catch (err) {
                      e.target.disabled = false;
                      showError("devices-error", describe(err));
                    }
                  },
                },
                "Revoke",
              ),
        ),
      );
    }
    if (!devices.length) list.append(h("li", { class: "hint" }, "No devices."));
  } catch (e) {
    list.textContent = "";
    showError("devices-error", describe(e));
  }
}

// ---------------------------------------------------------------- sign out

async function signOut() {
  const device = state.me && state.me.device_id;
  if (device && api.session) {
    // Revoke this device's tokens on the server too; do not keep the person waiting for it.
    await Promise.race([api.revokeDevice(device).catch(() => {}), new Promise((r) => setTimeout(r, 1500))]);
  }
  api.signOut();
  signedOut();
}

function signedOut() {
  stopChat();
  document.body.classList.remove("conv-open");
  showAuth();
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("tab-signup").addEventListener("click", () => selectTab("signup"));
  $("tab-signin").addEventListener("click", () => selectTab("signin"));
  for (const id of ["tab-signin", "tab-signup"]) {
    $(id).addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        const next = id === "tab-signin" ? "tab-signup" : "tab-signin";
        $(next).click();
        $(next).focus();
      }
    });
  }
  $("signup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitAuth("signup", e.target);
  });
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitAuth("signin", e.target);
  });
  $("new-chat-form").addEventListener("submit", newChat);
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
    $("composer-input").focus();
  });
  $("composer-input").addEventListener("keydown", (e) => {
    // Not while an input method (Hangul, kana, …) is still composing a character.
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      send();
    }
  });
  $("composer-input").addEventListener("input", autoGrow);
  $("load-older").addEventListener("click", loadOlder);
  $("conv-back").addEventListener("click", closeConversation);
  $("sign-out").addEventListener("click", signOut);
  $("devices-open").addEventListener("click", openDevices);
  document.addEventListener("visibilitychange", () => {
    if (!state.me) return;
    renderList();
    if (isVisible()) {
      maybeMarkRead();
      refreshList();
    }
  });
  window.addEventListener("online", () => state.push && state.push.restart());
  // Another tab signed in or out.
  window.addEventListener("storage", (e) => {
    if (e.key !== "bongsu.session") return;
    if (!e.newValue && state.me) signedOut();
    else if (e.newValue && !state.me) location.reload();
  });
  api.onSignedOut = () => {
    if (state.me) signedOut();
  };
}

wire();
loadInfo();
if (api.session) startChat();
else showAuth();
