"""The one domain exception: a message a user can act on."""


class DeployError(Exception):
    """A failure explained in one sentence that says what happened and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(DeployError):
    """Bad input found before anything was done on any host."""


class PermanentError(DeployError):
    """A failure that trying again cannot heal (a copy the host refuses): never retried."""
