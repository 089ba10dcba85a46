"""Exports written the way each network writes them, for the demo and the tests: `writers` renders posts as an X
archive, a Mastodon outbox, a Bluesky repo CAR or Twitter API v2 pages; `build` writes the bundled demo corpus
(`roost demo-corpus`). This floor sits beside the corpus: it makes the files the corpus's importers read, and
only borrows the corpus's entity patterns so links, tags and mentions are rendered as the networks do.
"""
