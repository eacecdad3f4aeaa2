// The controller's REST API (/api/v2) as the console calls it: fetch with the session's
// Basic credentials, OCP's envelope unwrapped, refusals as ApiError, and a task's event
// stream read as server-sent events.

import { authorization, currentUser } from "./state.js";

const API = "/api/v2";

export class ApiError extends Error {
  constructor(status, code, message, subErrors) {
    super(message);
    this.status = status;
    this.code = code;
    this.subErrors = subErrors || [];
  }
  /** What a person reads: the OCP code, the message, and which field was wrong. */
  describe() {
    const fields = this.subErrors.map((e) => `${e.field}: ${e.message}`).join("; ");
    const code = this.code ? `Error ${this.code}` : `HTTP ${this.status}`;
    return `${code}: ${this.message}${fields ? ` (${fields})` : ""}`;
  }
}

let sessionLost = () => {};

/** What to do when the API stops accepting the signed-in user (the password changed). */
export function onSessionLost(handler) {
  sessionLost = handler;
}

function headers(extra) {
  const out = { "X-Requested-With": "XMLHttpRequest", ...extra };
  const auth = authorization();
  if (auth) out.Authorization = `Basic ${auth}`;
  return out;
}

/** The Content-Type and the body a call sends: a Blob (a chosen file) as it is, else JSON. */
function payload(body) {
  if (body === undefined) return [{}, undefined];
  if (body instanceof Blob) return [{ "Content-Type": "application/octet-stream" }, body];
  return [{ "Content-Type": "application/json" }, JSON.stringify(body)];
}

/** The call's `data` and its response headers; throws an ApiError for a refusal. */
export async function request(method, path, body, signal) {
  let response;
  const [type, sent] = payload(body);
  try {
    response = await fetch(API + path, { method, headers: headers(type), body: sent, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, 0, `the controller cannot be reached (${e.message})`);
  }
  let json = null;
  try {
    json = await response.json();
  } catch (_) {
    // An answer without OCP's envelope, e.g. from a proxy in between.
  }
  if (response.ok && json && json.successful) return { data: json.data, headers: response.headers };
  const err = (json && json.error) || {};
  const error = new ApiError(response.status, err.code, err.message || response.statusText, err.subErrors);
  // A session that stops being accepted (the password changed) ends; a wrong password
  // at sign-in is the sign-in form's to say.
  if (response.status === 401 && currentUser()) {
    sessionLost("Your session is no longer accepted: " + error.describe());
  }
  throw error;
}

export async function api(method, path, body, signal) {
  return (await request(method, path, body, signal)).data;
}

/** `?k=v&...` of the parameters that have a value. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.append(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

/**
 * Follows task `id`'s transitions after event `after`, calling `onEvent` with each, until
 * the stream ends (the task stopped running). Read with fetch, not EventSource, because
 * EventSource cannot send credentials.
 */
export async function watchTask(id, after, signal, onEvent) {
  const response = await fetch(`${API}/tasks/instances/${id}/events?after=${after}`, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
  });
  if (response.status === 401 && currentUser()) sessionLost("Your session is no longer accepted.");
  if (!response.ok) throw new ApiError(response.status, 0, `the event stream was refused (${response.status})`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { type: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") {
        if (event.type === "transition" && event.data.length) onEvent(JSON.parse(event.data.join("\n")));
        event = { type: "message", data: [] };
      } else if (line.startsWith("event:")) event.type = line.slice(6).trim();
      else if (line.startsWith("data:")) event.data.push(line.slice(5).replace(/^ /, ""));
    }
  }
}
