// The HTTP API and the SSE stream reader (docs/api.md: "Chats" to "The stream").
// Relative URLs, so the page works wherever it is mounted.

const BASE = new URL("./", document.baseURI);

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function url(path) {
  return new URL(path.replace(/^\//, ""), BASE).toString();
}

async function failure(res) {
  let type = "http_error";
  let message = `${res.status} ${res.statusText}`.trim();
  try {
    const body = await res.json();
    if (body && body.error) {
      type = body.error.type || type;
      message = body.error.message || message;
    }
  } catch {
    // Not our JSON error shape (a proxy's HTML page, say): keep the status line.
  }
  return new ApiError(res.status, type, message);
}

// ---------- the session ----------
// With accounts on, every call carries the session cookie (HttpOnly: the page never sees
// it). A 401 means the session is gone (signed out elsewhere, expired, revoked): the
// handler takes the page back to its sign-in screen.
let onUnauthorized = () => {};
// Bumped when a session ends, so an answer that arrives afterwards (asked for by the
// session before) is dropped instead of drawing that user's chats on the screen again.
let epoch = 0;

export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export function endSession() {
  epoch += 1;
}

function checkEpoch(mine) {
  if (mine !== epoch) throw new DOMException("the session has ended", "AbortError");
}

async function send(method, path, body, extra = {}) {
  const mine = epoch;
  const init = { method, headers: { ...extra.headers }, signal: extra.signal };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url(path), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "Cannot reach the server. Check that it is running.");
  }
  checkEpoch(mine);
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401) onUnauthorized(err);
    throw err;
  }
  return res;
}

async function json(method, path, body) {
  const mine = epoch;
  const res = await send(method, path, body);
  const data = res.status === 204 ? null : await res.json();
  checkEpoch(mine);
  return data;
}

export const api = {
  listChats: (cursor, limit = 30) =>
    json("GET", `api/chats?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`),
  createChat: (body) => json("POST", "api/chats", body),
  getChat: (id) => json("GET", `api/chats/${encodeURIComponent(id)}`),
  updateChat: (id, body) => json("PATCH", `api/chats/${encodeURIComponent(id)}`, body),
  deleteChat: (id) => json("DELETE", `api/chats/${encodeURIComponent(id)}`),
  stop: (id) => json("POST", `api/chats/${encodeURIComponent(id)}/stop`),
  // The tools a chat may switch on: {items: [{name, description, input_schema, source}]}.
  tools: () => json("GET", "api/tools"),
  // [{id, status?, status_detail?}]: `status` is set on a model that cannot answer yet
  // (the embedded one while its runtime is prepared: "preparing").
  async models() {
    const body = await json("GET", "v1/models");
    return body && body.data ? body.data : [];
  },
};

// Who the page acts for, and the signed-in user's API keys (docs/api.md: "Identity").
export const identity = {
  me: () => json("GET", "api/me"),
  // How one may sign in here: { password, oidc: { name, url } | null }.
  methods: () => json("GET", "api/auth/methods"),
  login: (name, password) => json("POST", "api/auth/login", { name, password }),
  logout: () => json("POST", "api/auth/logout"),
  listKeys: async () => (await json("GET", "api/keys")).items,
  createKey: (name) => json("POST", "api/keys", name ? { name } : {}),
  revokeKey: (id) => json("DELETE", `api/keys/${encodeURIComponent(id)}`),
  // The user's own usage, per model (an admin's report would hold everyone's otherwise).
  usage: (name) => json("GET", `api/usage?group_by=model&user=${encodeURIComponent(name)}`),
};

// The POSTs that answer with a stream.
export const streams = {
  send: (chatId, body) => ["POST", `api/chats/${encodeURIComponent(chatId)}/messages`, body],
  regenerate: (messageId) => [
    "POST",
    `api/messages/${encodeURIComponent(messageId)}/regenerate`,
    {},
  ],
  edit: (messageId, content) => [
    "POST",
    `api/messages/${encodeURIComponent(messageId)}/edit`,
    { content },
  ],
};

/**
 * Parse an SSE body into events, whatever the chunk boundaries (even inside a "\r\n").
 * Calls onEvent({id, data}) per event; returns the last event id seen.
 */
export async function readSSE(body, onEvent, lastId = null) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  let id = lastId;
  const line = (text) => {
    if (text === "") {
      if (data.length) onEvent({ id, data: data.join("\n") });
      data = [];
      return;
    }
    if (text.startsWith(":")) return; // a comment (keep-alive)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) id = value;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const ch = buffer[i];
        if (ch !== "\n" && ch !== "\r") continue;
        // A "\r" at the very end may be the first half of "\r\n": wait for more bytes.
        if (ch === "\r" && i === buffer.length - 1 && !done) break;
        line(buffer.slice(start, i));
        if (ch === "\r" && buffer[i + 1] === "\n") i++;
        start = i + 1;
      }
      buffer = buffer.slice(start);
      if (done) break;
    }
  } finally {
    reader.releaseLock();
  }
  return id;
}

/**
 * Run one generation's stream to its end: the POST that starts it (or a resume), then, if
 * the connection drops before `[DONE]`, reconnect with Last-Event-ID so nothing repeats.
 * handlers: onChunk(chunk), onEventId(id), onReconnecting(bool), onStarted() (once the
 * first response has arrived, so the server has the generation). Resolves at the end.
 */
export async function runStream(chatId, start, handlers, signal) {
  let lastId = start.after ?? null;
  let finished = false;
  const onEvent = (ev) => {
    if (ev.id !== null) {
      lastId = ev.id;
      handlers.onEventId?.(ev.id);
    }
    if (ev.data === "[DONE]") {
      finished = true;
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(ev.data);
    } catch {
      return; // not a chunk of ours; the protocol says to ignore what we do not know
    }
    handlers.onChunk(chunk);
  };

  let res = start.request
    ? await startRequest(start.request, signal)
    : await resume(chatId, lastId, signal);
  // The server answered: from here on it knows the generation (a stop reaches it).
  handlers.onStarted?.();
  for (let attempt = 0; ;) {
    const before = lastId;
    if (res) {
      try {
        await readSSE(res.body, onEvent, lastId);
      } catch (err) {
        if (signal?.aborted) throw err;
      }
    }
    if (finished || res === null) return; // null: a 204, nothing live any more
    if (lastId !== before) attempt = 0; // it was making progress: a fresh drop
    // Dropped before [DONE]: the generation lives on in the server; rejoin it after the
    // last event seen (a server restart takes a few seconds: back off up to 2 s).
    // Offline, wait for the network instead of spending attempts.
    handlers.onReconnecting?.(true);
    if (!navigator.onLine) await online(signal);
    else if (++attempt > 8) {
      throw new ApiError(0, "network_error", "Lost the connection to the answer stream.");
    }
    await sleep(Math.min(300 * attempt, 2000), signal);
    res = undefined;
    try {
      res = await resume(chatId, lastId, signal);
      handlers.onReconnecting?.(false);
    } catch (err) {
      // Network failures and 5xx (a proxy while the server restarts) are worth retrying.
      const final = err instanceof ApiError && err.status !== 0 && err.status < 500;
      if (err.name === "AbortError" || final) throw err;
    }
  }
}

// The POST that starts a generation carries an Idempotency-Key, so when the network fails
// before the answer's headers arrive, sending it again joins the same generation.
async function startRequest([method, path, body], signal) {
  const headers = { "idempotency-key": newKey() };
  for (let attempt = 1; ; attempt++) {
    try {
      return await send(method, path, body, { headers, signal });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 0) || attempt >= 3) throw err;
    }
    await sleep(500 * attempt, signal);
  }
}

function newKey() {
  // randomUUID needs a secure context; plain http on a LAN address is not one.
  if (crypto.randomUUID && window.isSecureContext) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function resume(chatId, lastId, signal) {
  const headers = lastId !== null ? { "last-event-id": String(lastId) } : {};
  const path = `api/chats/${encodeURIComponent(chatId)}/stream${lastId === null ? "?after=0" : ""}`;
  const res = await send("GET", path, undefined, { headers, signal });
  return res.status === 204 ? null : res;
}

function online(signal) {
  return new Promise((resolve, reject) => {
    window.addEventListener("online", resolve, { once: true });
    signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
  });
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}
