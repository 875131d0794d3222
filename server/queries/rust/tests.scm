; Tests in a test file: functions whose attribute right above names `test` (`#[test]`,
; `#[tokio::test]`).
; Captures: @test (the test), @name (its name), @start (where its text starts: the attribute).

((attribute_item) @start
  .
  (function_item name: (_) @name) @test
  (#match? @start "test"))
