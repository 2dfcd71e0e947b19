"use strict";
// The hosted pages' only script, served from this origin: the page policy
// allows no inline code and no other source.
//
// Mail links carry their token after "#". Browsers never send the fragment to
// a server, so the token reaches Bastion only in the JSON body posted below:
// never an access log, a proxy log or a Referer. It is taken out of the
// address bar and the history at once. Every text shown comes from the
// template or goes in through textContent: nothing is parsed as HTML.
(() => {
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (window.location.hash) {
    window.history.replaceState(null, "", window.location.pathname);
  }
  // Another link opened in this tab only changes the fragment: start over with its token.
  window.addEventListener("hashchange", () => window.location.reload());

  const show = (state) => {
    for (const element of document.querySelectorAll("[data-state]")) {
      element.hidden = element.dataset.state !== state;
    }
  };

  // The status and problem body of a JSON POST; status 0 when unreachable.
  const post = async (path, body) => {
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
        redirect: "error",
      });
      const problem = response.ok ? {} : await response.json().catch(() => ({}));
      return { status: response.status, problem };
    } catch {
      return { status: 0, problem: {} };
    }
  };

  // The state shown for an answer that is not a success.
  const refusal = (status) => (status === 0 ? "unreachable" : status === 429 ? "throttled" : "failed");

  const verifyEmail = async () => {
    if (!token) {
      show("missing");
      return;
    }
    show("working");
    const answer = await post("/api/v1/auth/verify-email", { token });
    show(answer.status === 204 ? "done" : refusal(answer.status));
  };

  // Policy problems ("too short", "too common") as a list under the form.
  const listProblems = (texts) => {
    const list = document.getElementById("problems");
    list.replaceChildren(
      ...texts.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }),
    );
  };

  const passwordProblems = (problem) => {
    if (Array.isArray(problem.problems)) {
      return problem.problems.map(String);
    }
    const errors = Array.isArray(problem.errors) ? problem.errors : [];
    return errors.filter((e) => e.pointer === "/new_password").map((e) => String(e.detail));
  };

  const resetPassword = () => {
    if (!token) {
      show("request");
      document.getElementById("request").addEventListener("submit", async (event) => {
        event.preventDefault();
        const email = document.getElementById("email").value;
        const answer = await post("/api/v1/auth/password/forgot", { email });
        show(answer.status === 202 ? "sent" : refusal(answer.status));
      });
      return;
    }
    show("choose");
    const form = document.getElementById("choose");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const password = document.getElementById("new-password").value;
      if (password !== document.getElementById("repeat-password").value) {
        listProblems(["The two passwords differ."]);
        return;
      }
      listProblems([]);
      const button = form.querySelector("button");
      button.disabled = true;
      const answer = await post("/api/v1/auth/password/reset", { token, new_password: password });
      button.disabled = false;
      const problems = answer.status === 422 ? passwordProblems(answer.problem) : [];
      if (answer.status === 204) {
        show("done");
      } else if (problems.length > 0) {
        listProblems(problems); // the token is still good: choose another password
      } else {
        show(refusal(answer.status));
      }
    });
  };

  const pages = { "verify-email": verifyEmail, "reset-password": resetPassword };
  document.addEventListener("DOMContentLoaded", () => pages[document.body.dataset.page]?.());
})();
