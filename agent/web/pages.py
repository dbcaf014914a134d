"""The subscription pages people use in a browser: plain HTML, one small inline style sheet, no script.

Every page works without JavaScript, loads nothing from elsewhere and has
nothing to build: forms post (form-encoded) to the same endpoints scripts
use, which answer browsers with these pages and everyone else with JSON.
Accessible by construction: every control has a label, choices are grouped
in fieldsets with a legend, an error is announced (``role=alert``) and names
the field it is about, and the layout is one column that reflows.
The style sheet is allowed by its hash in the Content-Security-Policy
(``STYLE_HASH``); nothing else inline is.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Mapping
from typing import Any

from agent.subscriptions.events import ALERTS
from agent.subscriptions.store import ALERT_KINDS, BOUNDS, FLAG_CHOICES, Preferences, Subscription

STYLE = ("body{font:1rem/1.5 system-ui,sans-serif;max-width:42rem;margin:1rem auto;padding:0 1rem;color:#111;"
         "background:#fff}fieldset{border:1px solid #999;margin:1rem 0;padding:.5rem 1rem}legend{font-weight:600}"
         "label{display:block;margin:.4rem 0}input[type=text],input[type=email],input[type=number],select"
         "{display:block;font:inherit;padding:.3rem;width:100%;max-width:28rem;box-sizing:border-box}"
         "button{font:inherit;padding:.4rem 1rem;margin:.5rem .5rem .5rem 0}"
         ".error{border:2px solid #b00020;padding:.5rem 1rem;color:#b00020}.note{border:2px solid #1b5e20;"
         "padding:.5rem 1rem}.hint{color:#444;font-size:.9rem}code{word-break:break-all}")
#: For the Content-Security-Policy's style-src: this style element and nothing else.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
_TARGETS = {"relay": ("A relay", "its fingerprint, 40 hex digits"),
            "family": ("A relay and its family", "a family member's fingerprint, 40 hex digits"),
            "operator": ("A verified operator's relays", "the operator's domain (AROI), e.g. example.org"),
            "contact": ("Relays by contact line", "the exact contact line")}
_NUMBERS = {"down_hours": "Tell me a relay is down after (hours)",
            "low_bandwidth_kbytes": "Low bandwidth under (kB/s; 0: never)",
            "weight_drop_percent": "Consensus weight dropped by at least (%)",
            "weight_drop_hours": "… within (hours)"}
_e = html.escape


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title>"
            "<link rel=icon href=\"data:,\">"  # no favicon request
            f"<style>{STYLE}</style></head><body><main><h1>{_e(title)}</h1>{body}</main></body></html>")


def message_page(title: str, lines: Iterable[str], error: bool = False, links: Iterable[tuple[str, str]] = ()
                 ) -> str:
    """A result: what happened, and where to go next."""
    text = "".join(f"<p>{_e(line)}</p>" for line in lines)
    box = f"<div class=error role=alert>{text}</div>" if error else f"<div class=note role=status>{text}</div>"
    return page(title, box + "".join(f"<p><a href=\"{_e(href)}\">{_e(label)}</a></p>" for href, label in links))


def button_page(title: str, explanation: str, action: str, token: str, label: str) -> str:
    """A link from a mail lands here: only pressing the button (a POST) does anything."""
    return page(title, f"<p>{_e(explanation)}</p><form method=post action={action}>"
                       f"<input type=hidden name=token value=\"{_e(token)}\"><button>{_e(label)}</button></form>")


def subscribe_page(kinds: Iterable[str], defaults, values: Mapping[str, Any] | None = None,
                   error: str | None = None) -> str:
    """The sign-up form; ``kinds``: the subscription kinds offered, ``defaults``: the ``subscriptions`` section
    (its thresholds are the placeholders), ``values``: what was sent, shown again after an error."""
    values = values or {}
    chosen = str(values.get("kind") or "relay")
    options = "".join(f"<option value={kind}{' selected' if kind == chosen else ''}>{_e(_TARGETS[kind][0])}</option>"
                      for kind in kinds)
    hints = "; ".join(f"{_TARGETS[kind][0].lower()}: {_TARGETS[kind][1]}" for kind in kinds)
    body = (_error(error)
            + "<p>Get a mail when something is wrong with a Tor relay you run: down, a lost flag, an old tor, "
              "low bandwidth and more. You confirm by mail first, and every mail has a link to change what you "
              "hear or to stop.</p>"
            + "<form method=post action=/subscribe><input type=hidden name=preferences_form value=1>"
            + f"<label>Your email address<input type=email name=email required autocomplete=email "
              f"value=\"{_e(str(values.get('email', '')))}\"{_invalid(error, 'email')}></label>"
            + f"<label>What to watch<select name=kind>{options}</select></label>"
            + f"<label>Which one<input type=text name=target required autocomplete=off spellcheck=false "
              f"aria-describedby=target-hint value=\"{_e(str(values.get('target', '')))}\""
              f"{_invalid(error, 'target')}></label><p id=target-hint class=hint>{_e(hints)}</p>"
            + _preference_fields(_shown(values), defaults, error)
            + "<button>Subscribe</button></form>"
            + "<form method=post action=/subscriptions><fieldset><legend>Already subscribed?</legend>"
              "<label>Mail the list of my subscriptions, with their links, to<input type=email name=email required "
              "autocomplete=email></label><button>Mail me my subscriptions</button></fieldset></form>")
    return page("Tor relay alerts", body)


def manage_page(subscription: Subscription, defaults, token: str, notice: str | None = None,
                error: str | None = None, values: Mapping[str, Any] | None = None) -> str:
    """One subscription (its unsubscribe token authorises this): change what it hears, or stop it."""
    shown = _shown(values) if values is not None else _current(subscription.preferences)
    status = f"<div class=note role=status><p>{_e(notice)}</p></div>" if notice else ""
    body = (status + _error(error)
            + f"<p>Alerts about {_e(_TARGETS.get(subscription.kind, (subscription.kind,))[0].lower())} "
              f"<code>{_e(subscription.target)}</code> to <code>{_e(subscription.email)}</code>; this subscription "
              f"is {_e(subscription.status)}.</p>"
            + "<form method=post action=/preferences><input type=hidden name=preferences_form value=1>"
            + f"<input type=hidden name=token value=\"{_e(token)}\">"
            + _preference_fields(shown, defaults, error) + "<button>Save my choices</button></form>"
            + "<form method=post action=/unsubscribe><fieldset><legend>Stop</legend>"
            + f"<input type=hidden name=token value=\"{_e(token)}\">"
            + "<p>No more alerts for this subscription.</p><button>Stop these alerts</button></fieldset></form>")
    return page("Your subscription", body)


def _preference_fields(values: Mapping[str, Any], defaults, error: str | None) -> str:
    kinds = set(values.get("kinds") or ALERT_KINDS)
    configured_flags = set(getattr(defaults, "flags", FLAG_CHOICES))
    flags = set(values.get("flags") or configured_flags)
    boxes = "".join(f"<label><input type=checkbox name=kinds value={kind}{' checked' if kind in kinds else ''}> "
                    f"{_e(ALERTS[kind][1])} <span class=hint>({kind})</span></label>" for kind in ALERT_KINDS)
    flag_boxes = "".join(f"<label><input type=checkbox name=flags value={flag}{' checked' if flag in flags else ''}>"
                         f" {flag}</label>" for flag in FLAG_CHOICES)
    numbers = "".join(
        f"<label>{_e(label)}<input type=number name={name} min={BOUNDS[name][0]:g} max={BOUNDS[name][1]:g} "
        f"step=any inputmode=decimal placeholder=\"{getattr(defaults, name):g}\" aria-describedby={name}-hint "
        f"value=\"{_e(_text(values.get(name)))}\"{_invalid(error, name)}></label>"
        f"<span id={name}-hint class=hint>empty: the default, {getattr(defaults, name):g}</span>"
        for name, label in _NUMBERS.items())
    return (f"<fieldset{_invalid(error, 'kinds', ' aria-invalid=true')}><legend>Tell me when</legend>{boxes}</fieldset>"
            f"<fieldset><legend>A lost flag means, for these flags</legend>{flag_boxes}</fieldset>"
            f"<fieldset><legend>Thresholds and wait</legend>{numbers}</fieldset>")


def _shown(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Form values to show again: lists for the check boxes, text for the rest."""
    values = values or {}
    getlist = getattr(values, "getlist", None)
    shown: dict[str, Any] = {name: values.get(name) for name in ("email", "kind", "target", *BOUNDS)}
    for name in ("kinds", "flags"):
        found = getlist(name) if getlist is not None else values.get(name)
        shown[name] = [found] if isinstance(found, str) else list(found or [])
    return shown


def _current(preferences: Preferences) -> dict[str, Any]:
    return {"kinds": list(preferences.kinds or ()), "flags": list(preferences.flags or ()),
            **{name: getattr(preferences, name) for name in BOUNDS}}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _error(error: str | None) -> str:
    return f"<div class=error role=alert><p>Not done: {_e(error)}</p></div>" if error else ""


def _invalid(error: str | None, field: str, attribute: str = " aria-invalid=true") -> str:
    """Marks the control an error names (errors start with the field's name)."""
    return attribute if error and error.startswith(f"{field}:") else ""
