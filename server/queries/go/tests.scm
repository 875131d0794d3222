; Tests in a test file: functions named `Test…` (methods are never tests).
; Captures: @test (the test), @name (its name).

((function_declaration name: (identifier) @name) @test
  (#match? @name "^Test"))
