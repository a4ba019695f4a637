"""Bastion Bank's data: one SQLite file, its schema, the demo seed, and every query.

Threats handled here:

* SQL injection: every value reaches SQLite as a bound parameter (`?`), never through
  string formatting. The one place user text becomes a pattern, the transaction
  search, escapes LIKE's wildcards (`%`, `_`) and the escape character itself
  (`like_pattern`), so `50%_off` finds that text and not every memo.
* Account numbers disclosed by a copied database file, a backup or a read-only
  injection: IBANs are stored encrypted (`bastion.crypto`, AES-256-GCM) and bound to
  their row by `record_aad("accounts", "iban", id)`, so a ciphertext copied into
  another row no longer decrypts.
* Overdrafts and lost updates under concurrent transfers: a transfer is one
  `BEGIN IMMEDIATE` transaction that reads the balance and moves the money, and the
  schema refuses a negative balance (CHECK) whatever the code does.
* Offline cracking of stolen password hashes: argon2id (`bastion.auth.passwords`),
  upgraded on login when the parameters change.
* Object-level authorization: every query about accounts, transactions or notes is
  scoped to the signed-in user's name; an id from the client is only ever used
  together with that name.

Not covered: the demo's users and passwords are public (shown on the login page);
the unprotected variant stores IBANs in the clear (`StoredInClear`), which is the
weakness it exists to show.

References: SQLite "Binding values to prepared statements" and the LIKE/ESCAPE
operator https://www.sqlite.org/lang_expr.html#like ; OWASP Query Parameterization
Cheat Sheet; NIST SP 800-38D (GCM).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final, Protocol

from bastion.auth.passwords import PasswordHasher
from bastion.crypto import record_aad

# Amounts are typed by people: up to seven digits of units and two of cents. The
# pattern has no nested quantifier, so matching is linear.
_AMOUNT: Final = re.compile(r"[0-9]{1,7}(?:\.[0-9]{1,2})?")
# A demo bank: no single transfer over one million.
MAX_TRANSFER_CENTS: Final = 1_000_000 * 100
MAX_MEMO_CHARS: Final = 140  # an SEPA remittance line is 140 characters
MAX_NOTE_CHARS: Final = 2000
MAX_SEARCH_CHARS: Final = 100
MAX_USERNAME_CHARS: Final = 64
SEARCH_LIMIT: Final = 50
LIKE_ESCAPE: Final = "\\"
# How long a writer waits for another's lock before giving up (sqlite3's default).
_BUSY_TIMEOUT_SECONDS: Final = 5.0

ROLE_ADMIN: Final = "admin"
ROLE_CUSTOMER: Final = "customer"

REASON_BAD_AMOUNT: Final = "bad-amount"
REASON_NO_SUCH_ACCOUNT: Final = "no-such-account"
REASON_NO_SUCH_RECIPIENT: Final = "no-such-recipient"
REASON_SAME_ACCOUNT: Final = "same-account"
REASON_INSUFFICIENT_FUNDS: Final = "insufficient-funds"


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    password: str
    email: str
    role: str
    accounts: tuple[tuple[str, int], ...]  # (name, opening balance in cents)


# The demo's users. Their passwords are shown on the login page: this is a demo.
DEMO_USERS: Final = (
    DemoUser(
        "alice",
        "alice-demo-password",
        "alice@bank.example",
        ROLE_CUSTOMER,
        (("Current", 125_000), ("Savings", 500_000)),
    ),
    DemoUser("bob", "bob-demo-password", "bob@bank.example", ROLE_CUSTOMER, (("Current", 83_050),)),
    DemoUser(
        "admin", "admin-demo-password", "admin@bank.example", ROLE_ADMIN, (("Operations", 0),)
    ),
)
# Opening transactions: (from user, to user, cents, memo). The `%` and `_` in memos
# give the search something to escape.
_DEMO_TRANSACTIONS: Final = (
    ("alice", "bob", 4_200, "Dinner at Luigi's"),
    ("bob", "alice", 1_550, "Concert tickets 50% off"),
    ("alice", "bob", 90_000, "Rent_March"),
)

SCHEMA: Final = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL
);
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    iban TEXT NOT NULL,
    balance_cents INTEGER NOT NULL CHECK (balance_cents >= 0)
);
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY,
    from_account INTEGER NOT NULL REFERENCES accounts(id),
    to_account INTEGER NOT NULL REFERENCES accounts(id),
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    memo TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    html TEXT NOT NULL,
    created TEXT NOT NULL
);
"""


# --- the core: plain values and pure functions ---------------------------------------


class FieldCipher(Protocol):
    """What the database needs from field encryption (`bastion.crypto.FieldEncryptor`)."""

    def encrypt(self, plaintext: bytes | str, aad: bytes | str) -> str: ...

    def decrypt_text(self, untrusted_token: str, aad: bytes | str) -> str: ...


class StoredInClear:
    """The unprotected variant's "cipher": the value itself. The weakness on show."""

    def encrypt(self, plaintext: bytes | str, aad: bytes | str) -> str:
        return plaintext.decode() if isinstance(plaintext, bytes) else plaintext

    def decrypt_text(self, untrusted_token: str, aad: bytes | str) -> str:
        return untrusted_token


def iban_aad(account_id: int) -> bytes:
    """The associated data binding an IBAN ciphertext to its row."""
    return record_aad("accounts", "iban", account_id)


def demo_iban(account_id: int) -> str:
    """A fake, recognisable account number (`BB` is no country)."""
    digits = f"{account_id:012d}"
    return f"BB00 BSTN {digits[:4]} {digits[4:8]} {digits[8:]}"


def parse_amount(untrusted_text: str) -> int | None:
    """Cents from a typed amount (`12`, `12.5`, `12.50`), or None if it is not a
    positive amount with at most two decimals and at most `MAX_TRANSFER_CENTS`."""
    text = untrusted_text.strip()
    if not _AMOUNT.fullmatch(text):
        return None
    cents = int(Decimal(text) * 100)
    return cents if 0 < cents <= MAX_TRANSFER_CENTS else None


def format_cents(cents: int) -> str:
    return f"{cents // 100:,}.{cents % 100:02d}"


def like_pattern(untrusted_query: str) -> str:
    """A LIKE pattern matching `untrusted_query` literally anywhere (with ESCAPE '\\')."""
    escaped = (
        untrusted_query.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    email: str
    role: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    iban: str
    balance_cents: int

    @property
    def balance(self) -> str:
        return format_cents(self.balance_cents)


@dataclass(frozen=True, slots=True)
class Transaction:
    id: int
    created: str
    from_user: str
    to_user: str
    amount_cents: int
    memo: str

    @property
    def amount(self) -> str:
        return format_cents(self.amount_cents)


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    html: str
    created: str


@dataclass(frozen=True, slots=True)
class UserSummary:
    """One line of the admin page."""

    username: str
    email: str
    role: str
    accounts: int
    total_cents: int

    @property
    def total(self) -> str:
        return format_cents(self.total_cents)


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A transfer's outcome; `reason` is "" when it went through."""

    reason: str
    recipient: str = ""
    from_account: Account | None = None
    to_account: Account | None = None


# --- the adapter: the SQLite file --------------------------------------------------


def _insert(conn: sqlite3.Connection, sql: str, parameters: tuple[object, ...]) -> int:
    """Run one INSERT; the new row's id."""
    row_id = conn.execute(sql, parameters).lastrowid
    if row_id is None:  # pragma: no cover - sqlite3 sets it for every INSERT
        raise sqlite3.DatabaseError("INSERT without a row id")
    return row_id


class BankDatabase:
    """The bank's SQLite file. Every method opens its own connection, so the object
    can be shared by the worker threads that run the queries."""

    def __init__(self, path: Path, cipher: FieldCipher) -> None:
        self.path = path
        self.cipher = cipher

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Autocommit mode: each statement commits alone unless a BEGIN says otherwise.
        with closing(
            sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
        ) as conn:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn

    def initialise(self, *, seed: bool, hasher: PasswordHasher, now: str) -> bool:
        """Create the schema (and the demo data) if the file is new; True if it was."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'users'"
            ).fetchone()
            if exists:
                conn.execute("ROLLBACK")
                return False
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if seed:
                self._seed(conn, hasher, now)
            conn.execute("COMMIT")
        return True

    def _seed(self, conn: sqlite3.Connection, hasher: PasswordHasher, now: str) -> None:
        first_account: dict[str, int] = {}
        for demo in DEMO_USERS:
            user_id = _insert(
                conn,
                "INSERT INTO users (username, email, password_hash, role) VALUES (?, ?, ?, ?)",
                (demo.username, demo.email, hasher.hash(demo.password), demo.role),
            )
            for name, cents in demo.accounts:
                account_id = _insert(
                    conn,
                    "INSERT INTO accounts (user_id, name, iban, balance_cents)"
                    " VALUES (?, ?, '', ?)",
                    (user_id, name, cents),
                )
                first_account.setdefault(demo.username, account_id)
                # The row id is part of the associated data, so encrypt after insert.
                conn.execute(
                    "UPDATE accounts SET iban = ? WHERE id = ?",
                    (self.cipher.encrypt(demo_iban(account_id), iban_aad(account_id)), account_id),
                )
        conn.executemany(
            "INSERT INTO transactions (from_account, to_account, amount_cents, memo, created)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (first_account[sender], first_account[recipient], cents, memo, now)
                for sender, recipient, cents, memo in _DEMO_TRANSACTIONS
            ],
        )

    # Users ---------------------------------------------------------------------------

    def find_user(self, untrusted_username: str) -> User | None:
        if not 0 < len(untrusted_username) <= MAX_USERNAME_CHARS:
            return None
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, username, email, role, password_hash FROM users WHERE username = ?",
                (untrusted_username,),
            ).fetchone()
        return User(**dict(row)) if row is not None else None

    def set_password_hash(self, user_id: int, new_hash: str) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (new_hash, user_id))

    def summaries(self) -> list[UserSummary]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT u.username, u.email, u.role, COUNT(a.id) AS accounts,"
                " COALESCE(SUM(a.balance_cents), 0) AS total_cents"
                " FROM users u LEFT JOIN accounts a ON a.user_id = u.id"
                " GROUP BY u.id ORDER BY u.username"
            ).fetchall()
        return [UserSummary(**dict(row)) for row in rows]

    # Accounts ------------------------------------------------------------------------

    def _account(self, row: sqlite3.Row) -> Account:
        """Raises `bastion.crypto.DecryptionError` if the stored IBAN was tampered with."""
        iban = self.cipher.decrypt_text(row["iban"], iban_aad(row["id"]))
        return Account(row["id"], row["name"], iban, row["balance_cents"])

    def accounts_of(self, username: str) -> list[Account]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT a.id, a.name, a.iban, a.balance_cents FROM accounts a"
                " JOIN users u ON u.id = a.user_id WHERE u.username = ? ORDER BY a.id",
                (username,),
            ).fetchall()
        return [self._account(row) for row in rows]

    def transfer(
        self, username: str, from_account_id: int, to_username: str, cents: int, memo: str, now: str
    ) -> TransferResult:
        """Move `cents` from one of `username`'s accounts to `to_username`'s first account."""
        if not 0 < cents <= MAX_TRANSFER_CENTS:
            return TransferResult(REASON_BAD_AMOUNT)
        with self._connect() as conn:
            # IMMEDIATE takes the write lock first, so the balance read below is still
            # true when the money moves: no other transfer can interleave.
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = self._transfer(
                    conn, username, from_account_id, to_username, cents, memo, now
                )
                conn.execute("ROLLBACK" if result.reason else "COMMIT")
                return result
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _transfer(
        self,
        conn: sqlite3.Connection,
        username: str,
        from_id: int,
        to_username: str,
        cents: int,
        memo: str,
        now: str,
    ) -> TransferResult:
        source = conn.execute(
            "SELECT a.id, a.name, a.iban, a.balance_cents FROM accounts a"
            " JOIN users u ON u.id = a.user_id WHERE a.id = ? AND u.username = ?",
            (from_id, username),
        ).fetchone()
        if source is None:
            return TransferResult(REASON_NO_SUCH_ACCOUNT)
        target = conn.execute(
            "SELECT a.id FROM accounts a JOIN users u ON u.id = a.user_id"
            " WHERE u.username = ? ORDER BY a.id LIMIT 1",
            (to_username,),
        ).fetchone()
        if target is None:
            return TransferResult(REASON_NO_SUCH_RECIPIENT)
        if target["id"] == source["id"]:
            return TransferResult(REASON_SAME_ACCOUNT)
        if source["balance_cents"] < cents:
            return TransferResult(REASON_INSUFFICIENT_FUNDS)
        conn.execute(
            "UPDATE accounts SET balance_cents = balance_cents - ? WHERE id = ?",
            (cents, source["id"]),
        )
        conn.execute(
            "UPDATE accounts SET balance_cents = balance_cents + ? WHERE id = ?",
            (cents, target["id"]),
        )
        conn.execute(
            "INSERT INTO transactions (from_account, to_account, amount_cents, memo, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (source["id"], target["id"], cents, memo, now),
        )
        query = "SELECT id, name, iban, balance_cents FROM accounts WHERE id = ?"
        return TransferResult(
            "",
            to_username,
            self._account(conn.execute(query, (source["id"],)).fetchone()),
            self._account(conn.execute(query, (target["id"],)).fetchone()),
        )

    # Transactions and notes --------------------------------------------------------------

    def search(self, username: str, untrusted_query: str) -> list[Transaction]:
        """`username`'s transactions whose memo contains the query, literally."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT t.id, t.created, fu.username AS from_user, tu.username AS to_user,"
                " t.amount_cents, t.memo FROM transactions t"
                " JOIN accounts fa ON fa.id = t.from_account JOIN users fu ON fu.id = fa.user_id"
                " JOIN accounts ta ON ta.id = t.to_account JOIN users tu ON tu.id = ta.user_id"
                " WHERE (fu.username = ? OR tu.username = ?) AND t.memo LIKE ? ESCAPE ?"
                " ORDER BY t.id DESC LIMIT ?",
                (
                    username,
                    username,
                    like_pattern(untrusted_query[:MAX_SEARCH_CHARS]),
                    LIKE_ESCAPE,
                    SEARCH_LIMIT,
                ),
            ).fetchall()
        return [Transaction(**dict(row)) for row in rows]

    def add_note(self, username: str, html: str, now: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO notes (user_id, html, created)"
                " SELECT id, ?, ? FROM users WHERE username = ?",
                (html[:MAX_NOTE_CHARS], now, username),
            )

    def notes_of(self, username: str) -> list[Note]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT n.id, n.html, n.created FROM notes n JOIN users u ON u.id = n.user_id"
                " WHERE u.username = ? ORDER BY n.id DESC LIMIT ?",
                (username, SEARCH_LIMIT),
            ).fetchall()
        return [Note(**dict(row)) for row in rows]
