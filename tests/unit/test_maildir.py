"""The maildir notifier: Maildir delivery (tmp/, then new/), exactly once per message, clear failures."""

import mailbox
import os

import pytest
import yaml

from agent.alerts.maildir import MaildirConfig, MaildirSender
from agent.alerts.notifiers import subscription_channel
from agent.alerts.render import Message
from agent.config.loader import load_config
from agent.model.errors import DeliveryError

MESSAGE = Message("[warning] TorAuthorityUnreachable (auth3)", "auth3 is unreachable\n", "<p>auth3</p>")


def sender(directory) -> MaildirSender:
    return MaildirSender(MaildirConfig(str(directory), "agent@example.org"))


def test_a_message_lands_in_new_and_a_mail_reader_reads_it(tmp_path):
    sender(tmp_path / "mail").send("you@localhost", MESSAGE, "token-1")
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    [mail] = list(box)
    assert mail["Subject"] == MESSAGE.subject and mail["To"] == "you@localhost"
    assert mail["From"] == "agent@example.org" and mail["Message-ID"] == "<token-1@allium-agent>"
    assert os.listdir(tmp_path / "mail" / "tmp") == []  # nothing half-written is left behind


def test_a_retry_of_the_same_message_is_not_a_second_mail_but_another_message_is(tmp_path):
    mail = sender(tmp_path)
    mail.send("you@localhost", MESSAGE, "token-1")
    mail.send("you@localhost", MESSAGE, "token-1")
    assert len(os.listdir(tmp_path / "new")) == 1
    mail.send("you@localhost", MESSAGE, "token-2")
    mail.send("other@localhost", MESSAGE, "token-1")
    assert len(os.listdir(tmp_path / "new")) == 3


def test_a_bad_address_is_given_up_and_an_unwritable_folder_is_retried(tmp_path):
    with pytest.raises(DeliveryError) as refused:
        sender(tmp_path).send("you@localhost\nBcc: x@example.org", MESSAGE, "t")
    assert refused.value.permanent
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DeliveryError) as failed:
        sender(tmp_path / "file").send("you@localhost", MESSAGE, "t")
    assert not failed.value.permanent and str(tmp_path / "file") in str(failed.value)


def test_routes_name_maildir_targets_and_subscribers_get_the_folder_only_without_smtp(tmp_path):
    path = tmp_path / "agent.yaml"
    settings = {"maildir": {"directory": str(tmp_path / "mail")},
                "alerts": {"routes": [{"name": "me", "maildir": ["you@localhost"]}]}}
    path.write_text(yaml.safe_dump(settings))
    config = load_config(path, environ={})
    assert config.alerts.routes[0].targets == {"maildir": ("you@localhost",)}
    assert subscription_channel(config) == "maildir"
    path.write_text(yaml.safe_dump({**settings, "email": {"host": "127.0.0.1", "security": "none"}}))
    assert subscription_channel(load_config(path, environ={})) == "email"
