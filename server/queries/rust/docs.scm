; Documentation nib recognises. Captures: @doc (documentation), @skip (what may sit between
; documentation above an item and the item).

; `///` and `/** */` comments, and `#[doc = "..."]` attributes.
((line_comment) @doc (#match? @doc "^///"))
((block_comment) @doc (#match? @doc "^/\\*\\*"))
((attribute_item) @doc (#match? @doc "^#\\[doc"))

; Other attributes sit between the doc comment and the item.
(attribute_item) @skip
