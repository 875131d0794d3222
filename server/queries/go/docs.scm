; Documentation nib recognises. Captures: @doc (documentation), @skip (what may sit between
; documentation above an item and the item). `(#set! adjacent "true")`: only on the lines
; directly above the item.

; Go doc comments are plain comments directly above the declaration.
((comment) @doc
  (#set! adjacent "true"))
