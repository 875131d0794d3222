; Documentation nib recognises. Captures: @doc (documentation), @skip (what may sit between
; documentation above an item and the item).

; JSDoc / TSDoc: `/** */` comments.
((comment) @doc (#match? @doc "^/\\*\\*"))
