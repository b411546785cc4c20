from testqueue.cli import main

raise SystemExit(main())
