"""The agent's exception tree; each is caught at the edge that can act on it.

    AlliumError
     |- ConfigError          a configuration file is wrong, every problem listed (CLI exits 2)
     |- InvalidValue         one setting's value is wrong (collected into a ConfigError)
     |- DocumentError        a Tor document is malformed or of the wrong type
     |- FetchError           a download failed (refused, HTTP error, deadline)
     |   +- DocumentTooLarge a reply grew past the size cap
     |- StoreError           the TSDB or the outbox cannot take points
     |- StateError           the state directory or file cannot be used (unwritable, disk full, damaged)
     |- QueryError           the PromQL endpoint refused a query or could not be reached
     |- DeliveryError        an alert could not be handed to the SMTP server or homeserver
     |- SubscriptionError    a subscription request cannot be accepted
     +- TestnetError         the private Tor network could not be built or run

InvalidValue and SubscriptionError are also ValueErrors: they are raised
where a value is converted or validated.
"""


class AlliumError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AlliumError):
    """Every problem found in a configuration, each naming its key path."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


class InvalidValue(AlliumError, ValueError):
    """One configuration value is unusable; the loader adds its key path and collects every such problem."""


class DocumentError(AlliumError):
    """A downloaded or read document cannot be used; the message names it."""


class FetchError(AlliumError):
    """A download from a directory authority failed."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


class DocumentTooLarge(FetchError):
    """A reply grew past the size a document of its kind may have."""


class StoreError(AlliumError):
    """Points could not be written; ``permanent`` when retrying cannot help (HTTP 400)."""

    def __init__(self, message: str, permanent: bool = False):
        self.permanent = permanent
        super().__init__(message)


class StateError(AlliumError):
    """The state directory or a state file cannot be used; ``path`` names it and the message says why."""

    def __init__(self, path: object, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{path}: {cause}")


class QueryError(AlliumError):
    """The PromQL endpoint refused the query or could not be reached; the message says which."""


class SubscriptionError(AlliumError, ValueError):
    """A subscription request that cannot be accepted; the message says why."""


class DeliveryError(AlliumError):
    """A message was not delivered; ``permanent`` when retrying cannot help (recipient refused)."""

    def __init__(self, message: str, permanent: bool = False, retry_after_seconds: float | None = None):
        self.permanent = permanent
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message)


class TestnetError(AlliumError):
    """The private Tor network could not be set up, started or stopped."""

    __test__ = False  # keeps pytest from collecting this class
