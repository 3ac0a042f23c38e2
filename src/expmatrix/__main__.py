from expmatrix.cli import main

main()
