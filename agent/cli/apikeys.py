"""``allium-agent api-keys create|list|revoke``: the REST API's keys (agent/web/apikeys.py).

``create`` prints the key once, on stdout alone (what it is for goes to
stderr), so ``KEY=$(allium-agent api-keys create NAME)`` captures it; only
its SHA-256 hash is kept. ``list`` never shows a key, only its prefix.
"""

from __future__ import annotations

import json
import sys
import time

from agent.cli.human import table, utc

EXIT_OK, EXIT_REFUSED = 0, 1


def add_commands(commands, with_config) -> None:
    keys = commands.add_parser("api-keys", help="create, list or revoke keys of the REST API (/api/v1)")
    sub = keys.add_subparsers(dest="api_keys_command", required=True)
    create = with_config(sub.add_parser("create", help="create a key and print it once"), _create)
    create.add_argument("name", help="what the key is for (shown in lists)")
    create.add_argument("--scope", choices=("read", "subscriptions-admin"), default="read",
                        help="read: the data routes (default); subscriptions-admin: that too, and administering "
                             "subscriptions")
    listing = with_config(sub.add_parser("list", help="list the keys (never the keys themselves)"), _list)
    listing.add_argument("--json", action="store_true", help="print the keys as a JSON array")
    revoke = with_config(sub.add_parser("revoke", help="revoke a key by its ID or prefix"), _revoke)
    revoke.add_argument("key", metavar="ID|PREFIX", help="the key's ID or prefix, as `api-keys list` shows them")


def _store(arguments):
    from agent.config.loader import load_config
    from agent.pipeline.state import State
    from agent.web.apikeys import KeyStore

    state = State(load_config(arguments.config).state_dir)
    return state, KeyStore(state.db)


def _create(arguments) -> int:
    from agent.web.apikeys import ApiKeyError

    state, keys = _store(arguments)
    try:
        key, text = keys.create(arguments.name, (arguments.scope,), int(time.time()))
    except ApiKeyError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        state.close()
    print(f"API key {key.id} ({key.prefix}, scope {arguments.scope}) created; it is shown this once, keep it now:",
          file=sys.stderr)
    print(text)
    return EXIT_OK


def _list(arguments) -> int:
    state, keys = _store(arguments)
    try:
        found = keys.all()
    finally:
        state.close()
    if arguments.json:
        print(json.dumps([key.as_dict() for key in found], indent=2))
        return EXIT_OK
    if not found:
        print("no API keys")
        return EXIT_OK
    rows = [(str(key.id), key.prefix, key.name, " ".join(key.scopes), utc(key.created), utc(key.last_used),
             utc(key.revoked) if key.revoked else "valid") for key in found]
    print("\n".join(table(rows, ("id", "prefix", "name", "scopes", "created", "last used", "revoked"), right={0})))
    return EXIT_OK


def _revoke(arguments) -> int:
    from agent.web.apikeys import ApiKeyError

    state, keys = _store(arguments)
    try:
        key = keys.revoke(arguments.key, int(time.time()))
    except ApiKeyError as error:
        print(str(error), file=sys.stderr)
        return EXIT_REFUSED
    finally:
        state.close()
    print(f"revoked API key {key.id} ({key.prefix}, {key.name}) at {utc(key.revoked)}")
    return EXIT_OK
