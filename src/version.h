#ifndef LUAWS_VERSION_H
#define LUAWS_VERSION_H
#define LUAWS_VERSION "0.1.0"
#endif
