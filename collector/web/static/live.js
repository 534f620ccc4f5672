// Follows a command on its page without reloading: polls the page's JSON and updates the fields.
// The page works without this script (it refreshes itself); this only makes it smoother.
(function () {
  "use strict";
  var box = document.querySelector("[data-live-url]");
  if (!box || box.getAttribute("data-final") === "true") {
    return;
  }
  var url = box.getAttribute("data-live-url");
  var note = box.querySelector("[data-live-note]");
  var badge = box.querySelector("[data-state-badge]");
  var steps = box.querySelector("[data-steps]");
  var interval = 2000;
  var failures = 0;

  function say(text) {
    if (note) {
      note.textContent = text;
    }
  }

  function set(name, value) {
    box.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
      el.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
    });
  }

  function cell(row, text, tag) {
    var el = document.createElement(tag || "td");
    el.textContent = text === null || text === undefined ? "—" : String(text);
    row.appendChild(el);
    return el;
  }

  function showSteps(list) {
    // The page's own rendering of each step (fields, the end of its output), from the JSON.
    if (!steps || !list || !list.length) {
      return;
    }
    while (steps.firstChild) {
      steps.removeChild(steps.firstChild);
    }
    list.forEach(function (step) {
      var row = document.createElement("tr");
      if (step.failed) {
        row.className = "step-failed";
      }
      cell(row, step.component);
      var code = document.createElement("code");
      code.textContent = step.command;
      cell(row, "").replaceChildren(code);
      cell(row, step.status);
      cell(row, step.exit_code);
      cell(row, step.duration);
      var output = cell(row, "");
      if (step.tail) {
        var pre = document.createElement("pre");
        pre.className = "tail";
        pre.textContent = step.tail;
        output.replaceChildren(pre);
        if (step.tail_note) {
          var note = document.createElement("p");
          note.className = "tail-note";
          note.textContent = step.tail_note + " (reload the page for all of it)";
          output.appendChild(note);
        }
      }
      steps.appendChild(row);
    });
  }

  function showFailure(command) {
    var panel = document.getElementById("failed-step");
    if (!panel) {
      return;
    }
    panel.hidden = command.state !== "offboard_failed";
    var reason = panel.querySelector("[data-failed-reason]");
    if (reason) {
      reason.textContent = command.result && command.result.reason ? command.result.reason : "";
    }
    var step = command.failed_step;
    panel.querySelectorAll("[data-failed-at], [data-failed-step]").forEach(function (el) {
      el.hidden = !step;
    });
    if (!step) {
      return;
    }
    panel.querySelectorAll("[data-failed]").forEach(function (el) {
      var name = el.getAttribute("data-failed");
      var value = step[name];
      if (name === "tail_note") {
        el.textContent = value ? " (" + value + ")" : "";
      } else if (name === "tail") {
        el.textContent = value || "(no output)";
      } else {
        el.textContent = value === null || value === undefined ? "" : String(value);
      }
    });
  }

  function update(command) {
    set("state_label", command.state_label);
    if (badge) {
      badge.className = "state state-" + command.state;
    }
    box.setAttribute("data-state", command.state);
    set("delivered_at_text", command.delivered_at_text);
    set("delivery_count", command.delivery_count);
    set("completed_at_text", command.completed_at_text);
    set("rejections", command.rejections);
    set("machine_state_label", command.machine_state_label);
    set("result_status", command.result ? command.result.status : null);
    set("result_reason", command.result ? command.result.reason : null);
    set("running_text", command.running_text);
    set("last_rejection_text", command.last_rejection_text);
    showSteps(command.step_rows);
    showFailure(command);
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          say("Your session has ended: reload the page to sign in again.");
          return null;
        }
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (command) {
        if (command === null) {
          return;
        }
        failures = 0;
        update(command);
        if (command.final) {
          box.setAttribute("data-final", "true");
          say("Finished: " + command.state_label + ".");
          return;
        }
        say(command.delivered_at
          ? "Delivered to the agent; waiting for its report. Updating live."
          : "Waiting for the machine to check in. Updating live.");
        window.setTimeout(poll, interval);
      })
      .catch(function () {
        failures += 1;
        say("Lost contact with the collector; retrying.");
        window.setTimeout(poll, Math.min(30000, interval * Math.pow(2, failures)));
      });
  }

  window.setTimeout(poll, interval);
})();
