// Accounts on the page: which screen shows (sign-in or the chats), who is signed in,
// signing out, and the way back to sign-in when a session ends. With auth off (the
// single-user default) none of it shows and the chats start at once, as they always did.

import { endSession, identity, setUnauthorizedHandler } from "./api.js";
import { createKeysDialog } from "./keys.js";

const SESSION_ENDED = "Your session has ended; sign in again.";
// A 401 with auth off: someone made the server's first user meanwhile.
const AUTH_TURNED_ON = "This server now has accounts: sign in to go on.";
// One message for a wrong name and a wrong password alike, as the server answers: which
// of the two was wrong would tell a stranger which names exist.
const WRONG_CREDENTIALS = "Wrong user name or password.";

/**
 * hooks: start() puts the chats on screen and loads them; clear() takes every chat off
 * the page; focus() moves focus into the chats (after a sign-in); showError(err).
 */
export function createAccount(hooks) {
  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $("app"),
    skip: document.querySelector(".skip"),
    signin: $("signin"),
    form: $("signin-form"),
    name: $("signin-name"),
    password: $("signin-password"),
    submit: $("signin-submit"),
    fields: document.querySelectorAll("#signin-form .field"),
    oidc: $("signin-oidc"),
    notice: $("signin-notice"),
    error: $("signin-error"),
    account: $("account"),
    accountName: $("account-name"),
    openKeys: $("open-keys"),
    usage: $("usage"),
    signOut: $("sign-out"),
  };
  const keys = createKeysDialog();
  let user = null; // the signed-in user; null with auth off, or on the sign-in screen
  let inside = false; // the chats are on screen (signed in, or auth off)

  // The page's first request: a 401 means auth is on and this browser has no session.
  async function boot() {
    let me = null;
    try {
      me = await identity.me();
    } catch (err) {
      if (err.status === 401) {
        showSignIn("");
        return;
      }
      // Anything else (the server unreachable, say): open the chats as ever, and let
      // their own requests say what is wrong.
    }
    enter(me);
  }

  function enter(me) {
    user = me && me.auth ? me.user : null;
    ui.signin.hidden = true;
    document.title = "streamkeep"; // the open chat's title replaces it once loaded
    ui.accountName.textContent = user ? user.name : "";
    ui.account.hidden = !user;
    showUsage();
    ui.app.hidden = false;
    ui.skip.hidden = false;
    inside = true;
    hooks.start();
  }

  // Back to the sign-in screen, with nothing of the chats left on the page.
  function leave(notice) {
    const name = user ? user.name : "";
    inside = false;
    user = null;
    endSession(); // answers still on their way belong to the old session: drop them
    keys.close();
    hooks.clear();
    ui.app.hidden = true;
    ui.skip.hidden = true;
    ui.account.hidden = true;
    ui.accountName.textContent = "";
    ui.usage.hidden = true;
    ui.usage.textContent = "";
    // After an ended session the same person most likely signs in again: keep the name.
    showSignIn(notice, notice ? name : "");
  }

  // "1,234 tokens in · 5,678 out · 9 replies", per model in the tooltip. A failure
  // hides the line: usage is a courtesy, never a reason to show an error.
  async function showUsage() {
    if (!user) return;
    const name = user.name;
    let report;
    try {
      report = await identity.usage(name);
    } catch {
      ui.usage.hidden = true;
      return;
    }
    if (!user || user.name !== name) return; // signed out meanwhile
    const total = report.total;
    const n = (x) => x.toLocaleString();
    const replies = total.messages === 1 ? "1 reply" : `${n(total.messages)} replies`;
    ui.usage.textContent =
      `${n(total.input_tokens)} tokens in · ${n(total.output_tokens)} out · ${replies}` +
      (total.estimated ? " (some estimated)" : "");
    ui.usage.title = report.items
      .map((i) => `${i.group}: ${n(i.input_tokens)} in, ${n(i.output_tokens)} out`)
      .join("\n");
    ui.usage.hidden = false;
  }

  function showSignIn(notice, name = "") {
    document.title = "Sign in · streamkeep";
    ui.signin.hidden = false;
    ui.name.value = name;
    ui.password.value = "";
    markInvalid(false);
    ui.error.textContent = "";
    ui.notice.textContent = notice;
    (name ? ui.password : ui.name).focus();
    showMethods();
  }

  // The provider's button, and the password fields only where password sign-in is on.
  let methods = null;
  async function showMethods() {
    if (!methods) {
      try {
        methods = await identity.methods();
      } catch {
        return; // the password form stays, as before there were other ways
      }
    }
    if (methods.oidc) {
      ui.oidc.textContent = `Sign in with ${methods.oidc.name}`;
      ui.oidc.href = methods.oidc.url.replace(/^\//, "");
      ui.oidc.hidden = false;
    }
    if (!methods.password) {
      for (const field of ui.fields) field.hidden = true;
      ui.submit.hidden = true;
      if (methods.oidc) ui.oidc.focus();
    }
  }

  function markInvalid(invalid) {
    for (const input of [ui.name, ui.password]) {
      if (invalid) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  async function signIn(e) {
    e.preventDefault();
    const name = ui.name.value.trim();
    if (!name) {
      ui.name.focus();
      return;
    }
    // Cleared now, set after the answer: a second wrong try is announced again.
    ui.error.textContent = "";
    ui.submit.disabled = true;
    let me;
    try {
      me = await identity.login(name, ui.password.value);
    } catch (err) {
      failedSignIn(err);
      return;
    } finally {
      ui.submit.disabled = false;
    }
    ui.password.value = "";
    ui.notice.textContent = "";
    enter(me);
    hooks.focus();
  }

  function failedSignIn(err) {
    if (err.status === 401) {
      ui.error.textContent = WRONG_CREDENTIALS;
      markInvalid(true);
      // The name usually stays right; the password is typed again.
      ui.password.value = "";
      ui.password.focus();
    } else {
      ui.error.textContent = err.message; // the server unreachable, too many tries, …
    }
  }

  async function signOut() {
    ui.signOut.disabled = true;
    try {
      await identity.logout();
    } catch (err) {
      hooks.showError(err); // still signed in: say so, and stay
      return;
    } finally {
      ui.signOut.disabled = false;
    }
    // No chat id left in the address either, for whoever signs in next.
    history.replaceState(null, "", location.pathname + location.search);
    leave("");
  }

  // Only a session the page had can end: a 401 on the sign-in screen (a wrong password,
  // the boot's /api/me) is handled where it happens.
  setUnauthorizedHandler(() => {
    if (inside) leave(user ? SESSION_ENDED : AUTH_TURNED_ON);
  });
  ui.form.addEventListener("submit", signIn);
  for (const input of [ui.name, ui.password]) {
    input.addEventListener("input", () => markInvalid(false));
  }
  ui.openKeys.addEventListener("click", () => keys.open());
  ui.signOut.addEventListener("click", signOut);

  return { boot, isInside: () => inside, refreshUsage: showUsage };
}
