"""ChatStore: users from external identities (OIDC, a product's JWT, an auth proxy),
found by (issuer, subject), named from their claims."""

from __future__ import annotations

import asyncio

from streamkeep.store import ChatStore
from streamkeep.store.external_users import ExternalIdentity, user_name

IDP = "https://idp.example"


async def test_an_identity_is_one_user_made_the_first_time(store: ChatStore) -> None:
    ada = ExternalIdentity(IDP, "sub-1", name="ada", email="ada@idp.example")
    made = await store.external_user(ada)
    assert (made.name, made.issuer, made.email, made.is_admin) == (
        "ada",
        IDP,
        "ada@idp.example",
        False,
    )
    assert (await store.external_user(ada)).id == made.id
    assert await store.find_external_user(IDP, "sub-1") == made
    # The same subject at another issuer is someone else, named apart.
    other = await store.external_user(ExternalIdentity("https://other.example", "sub-1", "ada"))
    assert other.id != made.id and other.name.startswith("ada-") and len(other.name) == 12
    assert await store.count_users() == 2


async def test_a_name_taken_by_a_local_user_gets_a_suffix_and_the_local_user_stays(
    store: ChatStore,
) -> None:
    local = await store.create_user("bob", "a password")
    outside = await store.external_user(ExternalIdentity(IDP, "b", name="bob"))
    assert outside.id != local.id and outside.name != "bob"
    assert (await store.check_password("bob", "a password")) == local


async def test_names_come_from_the_claims_in_order(store: ChatStore) -> None:
    assert user_name(ExternalIdentity(IDP, "s", name="Ada L.", email="ada@x")) == "Ada L."
    assert user_name(ExternalIdentity(IDP, "s", email="ada@x")) == "ada"
    assert user_name(ExternalIdentity(IDP, "s-42")) == "s-42"
    assert user_name(ExternalIdentity(IDP, "s", name="\x00\x07 ")) == "s"
    assert len(user_name(ExternalIdentity(IDP, "s", name="n" * 300))) == 64


async def test_refresh_writes_a_changed_email_or_role_and_only_then(store: ChatStore) -> None:
    first = ExternalIdentity(IDP, "c", name="cy", email="cy@old.example", is_admin=True)
    made = await store.external_user(first)
    assert made.is_admin
    moved = ExternalIdentity(IDP, "c", name="renamed", email="cy@new.example", is_admin=False)
    assert (await store.external_user(moved)).email == "cy@old.example"  # no refresh: as is
    refreshed = await store.external_user(moved, refresh=True)
    assert (refreshed.name, refreshed.email, refreshed.is_admin) == ("cy", "cy@new.example", False)
    assert await store.get_user(made.id) == refreshed
    # An identity that says nothing of the role leaves it.
    await store.external_user(ExternalIdentity(IDP, "c", is_admin=True), refresh=True)
    kept = await store.external_user(ExternalIdentity(IDP, "c"), refresh=True)
    assert kept.is_admin and kept.email == "cy@new.example"


async def test_the_same_identity_arriving_at_once_makes_one_user(store: ChatStore) -> None:
    dee = ExternalIdentity(IDP, "d", name="dee")
    users = await asyncio.gather(*(store.external_user(dee) for _ in range(5)))
    assert len({u.id for u in users}) == 1
    assert [u.name for u in await store.list_users()] == ["dee"]


async def test_a_disabled_external_user_is_returned_disabled(store: ChatStore) -> None:
    eve = await store.external_user(ExternalIdentity(IDP, "e", name="eve"))
    await store.disable_user(eve.id)
    assert (await store.external_user(ExternalIdentity(IDP, "e"))).disabled_at is not None


def test_unusable_identities_are_named() -> None:
    assert ExternalIdentity(IDP, "").problem() == "names no issuer or no subject"
    assert "over 255" in (ExternalIdentity(IDP, "x" * 256).problem() or "")
    assert ExternalIdentity(IDP, "ok").problem() is None


async def test_two_identities_wanting_one_name_at_once_both_get_a_user(store: ChatStore) -> None:
    wanted = [ExternalIdentity(IDP, f"f{i}", name="fay") for i in range(4)]
    users = await asyncio.gather(*(store.external_user(w) for w in wanted))
    names = sorted(u.name for u in users)
    assert len(set(names)) == 4 and names[0] == "fay"
    assert all(n.startswith("fay-") for n in names[1:])
