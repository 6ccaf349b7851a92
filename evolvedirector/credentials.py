"""The one check that keeps credentials out of a run's config, and so out of `config.yaml`,
logs, error messages and reports.

A key is only ever read from the environment variable a `*_env` field names (`http.py`). Every
other field is saved with the run, so the config refuses what would carry a secret there: a URL
with `user:password@` or a secret-looking query parameter (`?key=`, `&token=`, `sig=`, ...), a
variable name that is a key, and a free-form request body with a secret-looking field. The
errors name the field and the rule, never the value: the value may be the secret itself.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

# Words that name a credential in a query parameter or a body field, matched per word of the
# name (api_key, apiKey, X-Api-Key, access_token, Signature, ...).
SECRET_WORDS = frozenset({
    "key", "apikey", "token", "accesstoken", "secret", "password", "passwd", "pwd", "pass", "auth",
    "authorization", "signature", "sig", "credential", "credentials", "cookie", "session", "sessionid",
    "bearer", "jwt", "privatekey", "clientsecret",
})
SECRET_ENDINGS = ("key", "token", "secret", "password")  # xapikey, authtoken, clientsecret
# Values that are keys whatever field holds them: well-known key prefixes and auth schemes.
KEY_LIKE_VALUE = re.compile(
    r"^(?:(?:bearer|basic|token)\s+\S|(?:sk|pk|rk)[-_]|(?:ghp|gho|ghs|github_pat|xox[abprs]|hf|glpat)_|"
    r"(?:AKIA|ASIA)[A-Z0-9]{12})", re.IGNORECASE,
)
VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
USE_ENV = "put the key in an environment variable and name it in the api_key_env field"


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # camelCase -> camel_Case
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def looks_secret(name: str) -> bool:
    """Whether a parameter or field name names a credential (api_key, X-Auth-Token, sig, ...)."""
    words = _words(name)
    joined = "".join(words)
    return any(w in SECRET_WORDS or w.endswith(SECRET_ENDINGS) for w in words) or joined in SECRET_WORDS


def looks_like_a_key(value: str) -> bool:
    """Whether a value is a key itself (sk-..., Bearer ..., ghp_..., AKIA...)."""
    return bool(KEY_LIKE_VALUE.match(value.strip()))


def check_url(url: str, *, full: bool = True) -> str:
    """`url` if it carries no credential, else ValueError naming the rule. `full`: it must be an
    absolute http(s) URL (a base_url); otherwise it is a path appended to one."""
    parts = urlsplit(url)
    if full and (parts.scheme not in ("http", "https") or not parts.netloc or " " in url):
        raise ValueError("must start with http:// or https:// and name a host")
    if "@" in parts.netloc:
        raise ValueError(f"must not hold credentials (user:password@); {USE_ENV}")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if looks_secret(name):
            raise ValueError(f"must not carry the secret-looking query parameter {name!r}; {USE_ENV}")
    return url


def check_variable_name(name: str | None) -> str | None:
    """`name` if it can be an environment variable's NAME and is not a key pasted in its place."""
    if name is None:
        return None
    # Capitals only, which no real key is; and not a key that happens to be in capitals.
    if not VARIABLE_NAME.fullmatch(name) or looks_like_a_key(name) or _random_looking(name):
        raise ValueError("must be the NAME of an environment variable in capitals (like OPENAI_API_KEY), "
                         "not the key")
    return name


def check_no_secret_fields(value: object, where: str = "") -> object:
    """A free-form request body (saved with the run) without secret-looking field names or
    key-like strings, at any depth."""
    if isinstance(value, dict):
        for name, item in value.items():
            path = f"{where}.{name}" if where else str(name)
            if looks_secret(str(name)):
                raise ValueError(f"field {path!r} looks like a credential and would be saved with the run; {USE_ENV}")
            check_no_secret_fields(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_no_secret_fields(item, f"{where}.{index}" if where else str(index))
    elif isinstance(value, str) and looks_like_a_key(value):
        raise ValueError(f"the value of {where or 'a field'!r} looks like an API key and would be saved with the "
                         f"run; {USE_ENV}")
    return value


def _random_looking(name: str) -> bool:
    # A key in capitals: a long run of letters and digits mixed, as no variable name has.
    return any(len(word) >= 16 and re.search(r"\d", word) and re.search(r"[A-Z]", word) for word in name.split("_"))
