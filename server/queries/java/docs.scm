; Documentation nib recognises. Captures: @doc (documentation), @skip (what may sit between
; documentation above an item and the item).

; Javadoc: `/** */` comments.
((block_comment) @doc (#match? @doc "^/\\*\\*"))
