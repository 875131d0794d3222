; Documentation nib recognises. Captures: @doc (documentation), @skip (what may sit between
; documentation above an item and the item).

; Doxygen comments: `/**`, `/*!`, `///` and `//!`.
((comment) @doc (#match? @doc "^(/\\*\\*|/\\*!|///|//!)"))
