"use strict";
// The blind A/B page. The server decides which side the student is on; this page never knows.
(function () {
  // The token arrives once in the address (?token=...). It is kept for this tab only and taken
  // out of the address bar, so that it does not linger on screen or in a copied link.
  const params = new URLSearchParams(window.location.search);
  if (params.has("token")) {
    sessionStorage.setItem("ab-token", params.get("token"));
    history.replaceState(null, "", window.location.pathname);
  }
  const token = sessionStorage.getItem("ab-token") || "";
  const state = { pair: null, busy: false, urls: [], shown: 0 };
  const byId = (id) => document.getElementById(id);

  function show(name, message) {
    document.body.dataset.state = name;
    if (message !== undefined) byId("status").textContent = message;
  }

  function showVotes(count) {
    document.body.dataset.votes = String(count);
    byId("status").textContent = count + (count === 1 ? " vote" : " votes") + " stored";
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({
      cache: "no-store",
      headers: { "X-AB-Token": token, "Content-Type": "application/json" },
    }, options || {}));
    if (response.status === 401) {
      throw new Error("The token is missing or wrong: open the address that `evolvedirector ab` printed.");
    }
    if (!response.ok) throw new Error("The server answered " + response.status + ".");
    return response;
  }

  // Images are fetched with the token and shown from blob: URLs (an <img> cannot send a header).
  async function image(url) {
    const blob = await (await api(url)).blob();
    const objectUrl = URL.createObjectURL(blob);
    state.urls.push(objectUrl);
    return objectUrl;
  }

  async function next() {
    state.busy = true;
    state.pair = null;
    show("loading");
    state.urls.forEach((url) => URL.revokeObjectURL(url));
    state.urls = [];
    try {
      const data = await (await api("/api/next")).json();
      const [left, right] = await Promise.all([image(data.left), image(data.right)]);
      byId("left").src = left;
      byId("right").src = right;
      byId("prompt").textContent = data.prompt;
      state.pair = data.pair_id;
      state.shown += 1;
      document.body.dataset.shown = String(state.shown);  // lets a test (or a person) tell pairs apart
      showVotes(data.votes);
      show("ready");
    } catch (error) {
      show("error", error.message);
    } finally {
      state.busy = false;
    }
  }

  async function vote(choice) {
    if (state.busy || !state.pair) return;  // one vote per pair, none while a pair loads
    state.busy = true;
    show("voting");
    try {
      const response = await api("/api/vote", {
        method: "POST",
        body: JSON.stringify({ pair_id: state.pair, choice: choice }),
      });
      showVotes((await response.json()).votes);
    } catch (error) {
      state.busy = false;
      show("error", error.message);
      return;
    }
    state.busy = false;
    await next();
  }

  function skip() {
    if (!state.busy) next();
  }

  const keys = { ArrowLeft: () => vote("left"), ArrowRight: () => vote("right"), " ": () => vote("tie"), s: skip };
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || event.repeat) return;
    const action = keys[event.key];
    if (action) {
      event.preventDefault();  // space would scroll, arrows would scroll
      action();
    }
  });
  byId("vote-left").addEventListener("click", () => vote("left"));
  byId("vote-right").addEventListener("click", () => vote("right"));
  byId("vote-tie").addEventListener("click", () => vote("tie"));
  byId("skip").addEventListener("click", skip);
  next();
})();
