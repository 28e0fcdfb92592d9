"""Mail, pure: parse raw RFC 5322 / MIME bytes, strip quotes for the index, plan threads (JWZ).

No I/O here: the store (core.ingest, core.api) calls these with bytes and the ids it looked up.

- ``core.mail.message``: ``parse_message`` (never raises), ``message_id_of``, ``normalize_subject``
- ``core.mail.model``: ``ParsedMessage`` and ``Attachment`` (re-exported by ``core.mail.message``)
- ``core.mail.subjects``: subjects without Re/Fwd prefixes and list tags (subject grouping)
- ``core.mail.ids``: Message-ID normalisation, msg-id lists, the synthetic id
- ``core.mail.text``: charset decoding with fallbacks, strings PostgreSQL can store
- ``core.mail.headers``: RFC 2047 headers, addresses, dates
- ``core.mail.mime``: the MIME tree -> readable text, attachments, notes
- ``core.mail.parts``: the MIME tree of well-formed mail cut straight from the bytes (the email
  package reads the rest, with the same answers)
- ``core.mail.html``: HTML -> text, blockquotes rendered as ``>`` quotes
- ``core.mail.quotes``: quoted earlier messages and signatures left out of the index
- ``core.mail.threads``: ``plan_assignment`` (which thread a message joins) and ``thread_tree``
"""
