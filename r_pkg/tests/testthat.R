library(testthat)
library(optensorflow)

test_check("optensorflow")
